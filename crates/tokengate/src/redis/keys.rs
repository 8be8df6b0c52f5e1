//! Key names: a prefix, one hash tag for everything a store holds, and budget names escaped so
//! that no name can alias another key or choose a cluster slot.

use std::fmt::Write;

use super::script::BudgetKeys;
use crate::policy::Policy;

/// Where a store's keys live: `PREFIX:{NAMESPACE}:...`. Everything in one namespace shares
/// one hash tag, so one cluster slot: a request touches several budgets (the account's, the
/// model's, the tenant's) in one atomic script, which Redis Cluster allows only within a slot.
#[derive(Debug, Clone)]
pub(crate) struct KeySpace {
    /// `PREFIX:{NAMESPACE}:`, both escaped.
    head: String,
}

impl KeySpace {
    pub(crate) fn new(prefix: &str, namespace: &str) -> Self {
        let mut head = String::new();
        escape_into(&mut head, prefix);
        head.push_str(":{");
        escape_into(&mut head, namespace);
        head.push_str("}:");
        Self { head }
    }

    /// The keys of budget `name` under `policy`: its state, its leases, one list per limit.
    pub(crate) fn budget(&self, name: &str, policy: &Policy) -> BudgetKeys {
        let base = self.base(name);
        BudgetKeys {
            state: format!("{base}:s"),
            leases: format!("{base}:l"),
            lists: (0..policy.limits.len())
                .map(|i| format!("{base}:w{i}"))
                .collect(),
        }
    }

    /// The channel on which a settlement that frees an in-flight slot publishes the state key
    /// of its budget: `PREFIX:{NAMESPACE}:released`.
    pub(crate) fn released(&self) -> String {
        format!("{}released", self.head)
    }

    /// What every key of budget `name` starts with, then `:`.
    pub(crate) fn base(&self, name: &str) -> String {
        let mut base = format!("{}b:", self.head);
        escape_into(&mut base, name);
        base
    }

    /// A SCAN pattern for every key of budget `name`.
    pub(crate) fn pattern(&self, name: &str) -> String {
        // Escaped names hold no glob character but the ones escaped here.
        let mut pattern = String::new();
        for c in self.base(name).chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push_str(":*");
        pattern
    }
}

/// Appends `name` with every byte outside `[A-Za-z0-9._-]` written `%XX`: `:` cannot split a
/// name into two, `{` and `}` cannot pick a hash tag, and two names never meet.
fn escape_into(out: &mut String, name: &str) {
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_alias_or_pick_a_slot() {
        let space = KeySpace::new("tg", "acme");
        assert_eq!(space.base("model gpt-4o"), "tg:{acme}:b:model%20gpt-4o");
        // A name with the separator or braces stays one name in the one tag.
        assert_eq!(space.base("a:b{x}"), "tg:{acme}:b:a%3Ab%7Bx%7D");
        assert_ne!(space.base("a:b"), space.base("a%3Ab"));
        let odd = KeySpace::new("p{", "}n");
        assert_eq!(odd.base("x"), "p%7B:{%7Dn}:b:x");
        assert_eq!(space.pattern("m"), "tg:{acme}:b:m:*");
    }
}
