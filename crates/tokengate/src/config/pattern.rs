//! A family's `match`: model names and prefix patterns, read and checked so that no model
//! belongs to two budgets.

use toml::de::DeValue;

use super::document::Doc;
use super::error::{self, index, ConfigError, ErrorKind};
use super::policy_table::At;
use super::tree::{self, Node, Span};
use super::Config;

/// A pattern of a family: lower case, exact or prefix, where it was written.
pub(super) struct Pattern {
    /// As written.
    written: String,
    /// Lower case, without the trailing `*` of a prefix.
    pub(super) text: String,
    /// Whether it matches every name that starts with `text`, rather than `text` alone.
    pub(super) prefix: bool,
    /// The index of its family in [`Config`]'s families.
    pub(super) family: usize,
    at: At,
}

impl Pattern {
    /// Whether some model name matches both.
    fn overlaps(&self, other: &Pattern) -> bool {
        match (self.prefix, other.prefix) {
            (false, false) => self.text == other.text,
            (true, false) => other.text.starts_with(&self.text),
            (false, true) => self.text.starts_with(&other.text),
            (true, true) => {
                self.text.starts_with(&other.text) || other.text.starts_with(&self.text)
            }
        }
    }
}

impl Doc<'_> {
    /// A family's `match`: one pattern or an array of them. Returns them as written.
    pub(super) fn patterns(
        &self,
        node: &Node<'_>,
        at: &At,
        family: usize,
        patterns: &mut Vec<Pattern>,
    ) -> Result<Vec<String>, ConfigError> {
        const EXPECTED: &str = "expected a model name or pattern, or an array of them, e.g. \
             match = [\"gpt-4o-mini\", \"gpt-4o-mini-*\"] (exact names, or a prefix and a trailing *)";
        let items: Vec<(&Node<'_>, String)> = match node.get_ref() {
            DeValue::String(_) => vec![(node, at.field.clone())],
            DeValue::Array(items) if !items.is_empty() => items
                .iter()
                .enumerate()
                .map(|(i, item)| (item, index(&at.field, i)))
                .collect(),
            DeValue::Array(_) => {
                return Err(self.error(
                    node.span(),
                    &at.field,
                    ErrorKind::InvalidValue,
                    format!("{EXPECTED}, found an empty array"),
                ))
            }
            other => {
                return Err(self.error(
                    node.span(),
                    &at.field,
                    ErrorKind::WrongType,
                    format!("{EXPECTED}, found {}", tree::kind(other)),
                ))
            }
        };
        let mut written = Vec::with_capacity(items.len());
        for (item, field) in items {
            let DeValue::String(s) = item.get_ref() else {
                return Err(self.error(
                    item.span(),
                    &field,
                    ErrorKind::WrongType,
                    format!("{EXPECTED}, found {}", tree::kind(item.get_ref())),
                ));
            };
            let s: &str = s;
            let invalid = |why: String| {
                self.error(
                    item.span(),
                    &field,
                    ErrorKind::InvalidValue,
                    format!("{EXPECTED}, found \"{}\": {why}", s.escape_debug()),
                )
            };
            if s.trim().is_empty() || s.trim() != s {
                return Err(invalid(
                    "a pattern is not empty and has no leading or trailing spaces".into(),
                ));
            }
            let (text, prefix) = match s.strip_suffix('*') {
                Some(prefix) => (prefix, true),
                None => (s, false),
            };
            if text.contains('*') {
                return Err(invalid("`*` may only end a pattern, once".into()));
            }
            if prefix && text.is_empty() {
                return Err(invalid(
                    "a bare `*` would match every model: give a prefix, or use [defaults.model] for models not listed".into(),
                ));
            }
            patterns.push(Pattern {
                written: s.to_owned(),
                text: text.to_ascii_lowercase(),
                prefix,
                family,
                at: At {
                    field,
                    span: item.span(),
                },
            });
            written.push(s.to_owned());
        }
        Ok(written)
    }

    /// No two families share a model name, and no exact name of a family is also a `[models]`
    /// entry. Reports the later of the two, in the file's order.
    pub(super) fn check_patterns(
        &self,
        config: &Config,
        patterns: &[Pattern],
        model_spans: &[Span],
    ) -> Result<(), ConfigError> {
        let mut order: Vec<&Pattern> = patterns.iter().collect();
        order.sort_by_key(|p| p.at.span.start);
        for (i, later) in order.iter().enumerate() {
            if !later.prefix {
                if let Some(&m) = config.model_index.get(&later.text) {
                    let (line, column) = self.line_column(model_spans[m].start);
                    return Err(self.error(
                        later.at.span.clone(),
                        &later.at.field,
                        ErrorKind::Overlap,
                        format!(
                            "`{}` is also listed as [models.{}] at {line}:{column}: a model has one budget, \
                             so remove it from one of the two (a [models] entry may override a family's prefix pattern, not an exact name)",
                            later.written.escape_debug(),
                            error::quote_key(&config.models[m].0)
                        ),
                    ));
                }
            }
            let first = order[..i]
                .iter()
                .find(|p| p.family != later.family && p.overlaps(later));
            if let Some(first) = first {
                let (line, column) = self.line_column(first.at.span.start);
                return Err(self.error(
                    later.at.span.clone(),
                    &later.at.field,
                    ErrorKind::Overlap,
                    format!(
                        "pattern \"{}\" overlaps \"{}\" of family `{}` (at {line}:{column}): a model would belong to two budgets; \
                         make the patterns disjoint (list exact names, or a longer prefix)",
                        later.written.escape_debug(),
                        first.written.escape_debug(),
                        config.families[first.family].name.escape_debug(),
                    ),
                ));
            }
        }
        Ok(())
    }
}
