//! The document reader: a TOML file's tree read into a [`Config`].
//!
//! [`Doc`] holds the text being read, for the line and column of every error. It reads the
//! file's top level (`margin`, `unlisted_models`, `[account]`, `[defaults]`, `[models]`,
//! `[families]`, `[tenants]`) and the names under each; each policy table is read by
//! `policy_table`, and a family's `match` by `pattern`.

use std::collections::HashMap;

use toml::de::DeValue;

use super::error::{self, child, ConfigError, ErrorKind};
use super::pattern::Pattern;
use super::policy_table::{TableKind, POLICY_FIELDS};
use super::suggest::unknown_field_message;
use super::tree::{self, Key, Node, Span};
use super::{Config, Family, UnlistedModels};

/// Where a file's `{ env = "NAME" }` values are read: the process's environment, or another.
pub(super) type Environment<'e> = &'e dyn Fn(&str) -> Result<String, std::env::VarError>;

/// Reads a configuration from TOML text; `file` names it in errors; `env` holds the values of
/// the variables it names.
pub(super) fn read(text: &str, file: &str, env: Environment<'_>) -> Result<Config, ConfigError> {
    Doc {
        text,
        file,
        margin: None,
        env,
    }
    .config()
}

/// The document being read: its text (for line and column) and its name.
pub(super) struct Doc<'t> {
    text: &'t str,
    file: &'t str,
    /// The file's `margin`, for every policy table that sets none of its own.
    pub(super) margin: Option<std::time::Duration>,
    /// Where `{ env = "NAME" }` values are read.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(super) env: Environment<'t>,
}

const ROOT_FIELDS: [&str; 8] = [
    "margin",
    "unlisted_models",
    "account",
    "defaults",
    "models",
    "families",
    "tenants",
    "store",
];
const DEFAULTS_FIELDS: [&str; 2] = ["model", "tenant"];

impl Doc<'_> {
    pub(super) fn line_column(&self, offset: usize) -> (usize, usize) {
        error::line_column(self.text, offset)
    }

    pub(super) fn error(
        &self,
        span: Span,
        field: &str,
        kind: ErrorKind,
        message: impl Into<String>,
    ) -> ConfigError {
        let (line, column) = self.line_column(span.start);
        ConfigError {
            file: self.file.to_owned(),
            line,
            column,
            field: field.to_owned(),
            message: message.into(),
            kind,
        }
    }

    fn config(&self) -> Result<Config, ConfigError> {
        let root = tree::parse(self.text).map_err(|e| self.syntax_error(&e))?;
        // The file's margin first: every policy table reads it.
        let mut margin = None;
        for (key, node) in tree::entries(root.get_ref()) {
            if *key.get_ref() == "margin" {
                margin = Some(self.margin(node, "margin")?);
            }
        }
        let doc = Doc { margin, ..*self };
        doc.read(&root)
    }

    fn read(&self, root: &toml::Spanned<toml::de::DeTable<'_>>) -> Result<Config, ConfigError> {
        let mut config = Config {
            file: self.file.to_owned(),
            account: None,
            default_model: None,
            default_tenant: None,
            models: Vec::new(),
            model_index: HashMap::new(),
            families: Vec::new(),
            family_names: HashMap::new(),
            family_prefixes: Vec::new(),
            tenants: Vec::new(),
            tenant_index: HashMap::new(),
            unlisted_models: UnlistedModels::default(),
            #[cfg(feature = "redis")]
            store: None,
        };
        let mut model_spans: Vec<Span> = Vec::new();
        let mut patterns: Vec<Pattern> = Vec::new();
        for (key, node) in tree::entries(root.get_ref()) {
            let name: &str = key.get_ref();
            let path = child("", name);
            match name {
                "margin" => {}
                "unlisted_models" => config.unlisted_models = self.unlisted_models(node, &path)?,
                "account" => {
                    let kind = TableKind {
                        what: "the account's policy (every request)",
                        family: false,
                    };
                    config.account = Some(self.policy_table(key, node, &path, kind)?.0);
                }
                "defaults" => self.defaults(node, &path, &mut config)?,
                "models" => self.models(node, &path, &mut config, &mut model_spans)?,
                "families" => self.families(node, &path, &mut config, &mut patterns)?,
                "tenants" => self.tenants(node, &path, &mut config)?,
                "store" => self.store(key, node, &path, &mut config)?,
                _ => {
                    let mut message = unknown_field_message(name, &ROOT_FIELDS);
                    if POLICY_FIELDS.contains(&name) || name == "match" {
                        message.push_str(
                            "; limits belong in a table: [account] (every request), [defaults.model], [models.NAME], [families.NAME] or [tenants.NAME]",
                        );
                    }
                    return Err(self.error(key.span(), &path, ErrorKind::UnknownField, message));
                }
            }
        }
        self.check_patterns(&config, &patterns, &model_spans)?;
        for p in patterns {
            if p.prefix {
                config.family_prefixes.push((p.text, p.family));
            } else {
                config.family_names.entry(p.text).or_insert(p.family);
            }
        }
        if config.account.is_none()
            && config.default_model.is_none()
            && config.default_tenant.is_none()
            && config.models.is_empty()
            && config.families.is_empty()
            && config.tenants.is_empty()
        {
            return Err(self.error(
                0..0,
                "",
                ErrorKind::Empty,
                "the file sets no limit: expected at least one of [account], [defaults.model], \
                 [models.NAME], [families.NAME], [tenants.NAME] or [defaults.tenant]",
            ));
        }
        Ok(config)
    }

    /// `unlisted_models = "error"` or `"pass"`.
    fn unlisted_models(&self, node: &Node<'_>, field: &str) -> Result<UnlistedModels, ConfigError> {
        const EXPECTED: &str = "expected \"error\" (a request for a model the file does not cover is refused) or \"pass\" (it is charged to the account and tenant budgets only)";
        match node.get_ref() {
            DeValue::String(s) if s.as_ref() == "error" => Ok(UnlistedModels::Error),
            DeValue::String(s) if s.as_ref() == "pass" => Ok(UnlistedModels::Pass),
            DeValue::String(s) => Err(self.error(
                node.span(),
                field,
                ErrorKind::InvalidValue,
                format!("{EXPECTED}, found \"{}\"", s.escape_debug()),
            )),
            other => Err(self.error(
                node.span(),
                field,
                ErrorKind::WrongType,
                format!("{EXPECTED}, found {}", tree::kind(other)),
            )),
        }
    }

    fn syntax_error(&self, e: &toml::de::Error) -> ConfigError {
        let span = e.span().unwrap_or(0..0);
        let message = e.message().trim_end();
        if message == "duplicate key" {
            let written = self.text.get(span.clone()).unwrap_or("");
            return self.error(
                span.clone(),
                &self.duplicate_path(span.start, written),
                ErrorKind::Syntax,
                format!(
                    "duplicate key: `{written}` is already defined in this table; each key and table may be written once"
                ),
            );
        }
        self.error(
            span,
            "",
            ErrorKind::Syntax,
            format!("invalid TOML: {message}"),
        )
    }

    /// The path of a key written twice, as far as the text tells: the table header it is in
    /// (or is part of), and the key.
    fn duplicate_path(&self, offset: usize, written: &str) -> String {
        let before = self.text.get(..offset).unwrap_or("");
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let line = self.text.get(line_start..).unwrap_or("");
        let line = line.split('\n').next().unwrap_or("").trim();
        if line.starts_with('[') {
            // The key is part of this header: the header up to and with the key.
            let end = offset - line_start + written.len();
            let header = self.text.get(line_start..line_start + end).unwrap_or("");
            return header.trim().trim_start_matches('[').trim().to_owned();
        }
        let header = before[..line_start]
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.starts_with('['))
            .map(|l| {
                l.trim_start_matches('[')
                    .split(']')
                    .next()
                    .unwrap_or("")
                    .trim()
            });
        match header {
            Some(h) if !h.is_empty() => format!("{h}.{written}"),
            _ => written.to_owned(),
        }
    }

    /// The table at `node`, or a type error saying what it should hold.
    fn table<'a, 'i>(
        &self,
        node: &'a Node<'i>,
        path: &str,
        expected: &str,
    ) -> Result<&'a toml::de::DeTable<'i>, ConfigError> {
        match node.get_ref() {
            DeValue::Table(t) => Ok(t),
            other => Err(self.error(
                node.span(),
                path,
                ErrorKind::WrongType,
                format!("expected {expected}, found {}", tree::kind(other)),
            )),
        }
    }

    fn defaults(
        &self,
        node: &Node<'_>,
        path: &str,
        config: &mut Config,
    ) -> Result<(), ConfigError> {
        let table = self.table(
            node,
            path,
            "a table: [defaults.model] and/or [defaults.tenant]",
        )?;
        for (key, node) in tree::entries(table) {
            let name: &str = key.get_ref();
            let field = child(path, name);
            match name {
                "model" => {
                    let kind = TableKind {
                        what: "the default model policy",
                        family: false,
                    };
                    config.default_model = Some(self.policy_table(key, node, &field, kind)?.0);
                }
                "tenant" => {
                    let kind = TableKind {
                        what: "the default tenant policy",
                        family: false,
                    };
                    config.default_tenant = Some(self.policy_table(key, node, &field, kind)?.0);
                }
                _ => {
                    let mut message = unknown_field_message(name, &DEFAULTS_FIELDS);
                    if POLICY_FIELDS.contains(&name) {
                        message
                            .push_str("; limits belong in [defaults.model] or [defaults.tenant]");
                    }
                    return Err(self.error(key.span(), &field, ErrorKind::UnknownField, message));
                }
            }
        }
        Ok(())
    }

    /// A name of a model, family or tenant: not empty, no surrounding spaces.
    fn check_name(&self, key: &Key<'_>, field: &str, what: &str) -> Result<(), ConfigError> {
        let name: &str = key.get_ref();
        if name.trim().is_empty() || name.trim() != name {
            return Err(self.error(
                key.span(),
                field,
                ErrorKind::InvalidValue,
                format!(
                    "expected {what} name that is not empty and has no leading or trailing spaces, found \"{}\"",
                    name.escape_debug()
                ),
            ));
        }
        Ok(())
    }

    fn models(
        &self,
        node: &Node<'_>,
        path: &str,
        config: &mut Config,
        spans: &mut Vec<Span>,
    ) -> Result<(), ConfigError> {
        let table = self.table(node, path, "a table of models, e.g. [models.\"gpt-4o\"]")?;
        for (key, node) in tree::entries(table) {
            let name: &str = key.get_ref();
            let field = child(path, name);
            self.check_name(key, &field, "a model")?;
            if name.contains('*') {
                return Err(self.error(
                    key.span(),
                    &field,
                    ErrorKind::InvalidValue,
                    format!(
                        "a model name cannot hold `*`: a pattern belongs in a family, e.g. [families.NAME] with match = [\"{}\"]",
                        name.escape_debug()
                    ),
                ));
            }
            let lower = name.to_ascii_lowercase();
            if let Some(&i) = config.model_index.get(&lower) {
                let (line, column) = self.line_column(spans[i].start);
                return Err(self.error(
                    key.span(),
                    &field,
                    ErrorKind::Duplicate,
                    format!(
                        "model `{}` is listed twice: `{}` at {line}:{column} is the same model (names are compared ignoring case); keep one",
                        name.escape_debug(),
                        config.models[i].0.escape_debug()
                    ),
                ));
            }
            let kind = TableKind {
                what: "the model",
                family: false,
            };
            let (policy, _) = self.policy_table(key, node, &field, kind)?;
            config.model_index.insert(lower, config.models.len());
            config.models.push((name.to_owned(), policy));
            spans.push(key.span());
        }
        Ok(())
    }

    fn families(
        &self,
        node: &Node<'_>,
        path: &str,
        config: &mut Config,
        patterns: &mut Vec<Pattern>,
    ) -> Result<(), ConfigError> {
        let table = self.table(
            node,
            path,
            "a table of families, e.g. [families.gpt-4o-mini]",
        )?;
        for (key, node) in tree::entries(table) {
            let name: &str = key.get_ref();
            let field = child(path, name);
            self.check_name(key, &field, "a family")?;
            let kind = TableKind {
                what: "the family",
                family: true,
            };
            let (policy, matched) = self.policy_table(key, node, &field, kind)?;
            let Some((match_at, match_node)) = matched else {
                // `policy_table` refuses a family without `match`.
                return Err(self.error(
                    key.span(),
                    &field,
                    ErrorKind::Missing,
                    "a family needs `match`",
                ));
            };
            let family = config.families.len();
            let written = self.patterns(match_node, &match_at, family, patterns)?;
            config.families.push(Family {
                name: name.to_owned(),
                patterns: written,
                policy,
            });
        }
        Ok(())
    }

    fn tenants(&self, node: &Node<'_>, path: &str, config: &mut Config) -> Result<(), ConfigError> {
        let table = self.table(node, path, "a table of tenants, e.g. [tenants.acme]")?;
        for (key, node) in tree::entries(table) {
            let name: &str = key.get_ref();
            let field = child(path, name);
            self.check_name(key, &field, "a tenant")?;
            let kind = TableKind {
                what: "the tenant",
                family: false,
            };
            let (policy, _) = self.policy_table(key, node, &field, kind)?;
            config
                .tenant_index
                .insert(name.to_owned(), config.tenants.len());
            config.tenants.push((name.to_owned(), policy));
        }
        Ok(())
    }
}
