//! "Did you mean": the allowed name closest to a mistyped or abbreviated one, for the
//! messages of unknown fields, algorithms, dimensions and models.

/// Abbreviations people write for the shorthand keys.
const ALIASES: [(&str, &str); 9] = [
    ("rps", "requests_per_second"),
    ("rpm", "requests_per_minute"),
    ("rpd", "requests_per_day"),
    ("itpm", "input_tokens_per_minute"),
    ("otpm", "output_tokens_per_minute"),
    ("tpm", "tokens_per_minute"),
    ("tpd", "tokens_per_day"),
    ("concurrency", "max_in_flight"),
    ("max_concurrency", "max_in_flight"),
];

/// "unknown field `x`: expected one of a, b, c (did you mean `b`?)".
pub(super) fn unknown_field_message(name: &str, allowed: &[&str]) -> String {
    let mut message = format!(
        "unknown field `{}`: expected one of {}",
        name.escape_debug(),
        allowed.join(", ")
    );
    if let Some(near) = near_field(name, allowed) {
        message.push_str(&format!(" (did you mean `{near}`?)"));
    }
    message
}

/// The key of `allowed` that `name` abbreviates ([`ALIASES`]) or is a typo of, if any.
pub(super) fn near_field<'a>(name: &str, allowed: &[&'a str]) -> Option<&'a str> {
    let lower = name.to_lowercase();
    allowed
        .iter()
        .find(|a| ALIASES.contains(&(lower.as_str(), **a)))
        .copied()
        .or_else(|| suggest(&lower, allowed))
}

/// The closest of `candidates` to `word`, if close enough to be a typo: at most 2 edits, or a
/// sixth of the candidate's length (Levenshtein distance, in characters). The rule behind the
/// "did you mean" of every limits file error, for tools that read files beside one (a
/// simulator's workload) to suggest alike.
///
/// # Examples
/// ```
/// use tokengate::config::suggest;
///
/// assert_eq!(suggest("requests_per_minit", &["requests_per_minute", "requests_per_day"]), Some("requests_per_minute"));
/// assert_eq!(suggest("banana", &["requests_per_minute"]), None);
/// ```
pub fn suggest<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    if word.chars().count() > 64 {
        return None;
    }
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, c)| *d > 0 && *d <= 2.max(c.len() / 6))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::super::policy_table::{POLICY_FIELDS, SHORTHAND_TABLE_FIELDS};
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(
            suggest("requests_per_minit", &POLICY_FIELDS),
            Some("requests_per_minute")
        );
        assert_eq!(suggest("zzz", &POLICY_FIELDS), None);
        assert!(unknown_field_message("rpm", &POLICY_FIELDS)
            .ends_with("(did you mean `requests_per_minute`?)"));
        assert_eq!(
            suggest("request_per_second", &POLICY_FIELDS),
            Some("requests_per_second")
        );
        assert_eq!(
            suggest("output_tokens_per_hr", &POLICY_FIELDS),
            Some("output_tokens_per_hour")
        );
        assert!(unknown_field_message("rps", &POLICY_FIELDS)
            .ends_with("(did you mean `requests_per_second`?)"));
        assert!(unknown_field_message("brust", &SHORTHAND_TABLE_FIELDS)
            .ends_with("(did you mean `burst`?)"));
    }

    #[test]
    fn every_alias_names_a_policy_field() {
        for (alias, full) in ALIASES {
            assert!(POLICY_FIELDS.contains(&full), "{alias} -> {full}");
        }
    }
}
