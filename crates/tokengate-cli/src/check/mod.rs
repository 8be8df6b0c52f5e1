//! `tokengate check FILE`: validates a limits file, a provider file or a workload file,
//! whichever it is, and explains it.
//!
//! The three are TOML files told apart by their top-level keys: a workload has `duration`,
//! `arrivals` and an array of `[[models]]`; a provider file is a limits file with a
//! `[provider]` table; anything else is read as a limits file, so that its mistakes are
//! reported as a limits file's.

mod limits;
mod workload;

use std::path::Path;

use tokengate::config::Config;
use toml::de::{DeTable, DeValue};

use crate::error::Error;
use crate::provider::ProviderSpec;
use crate::workload::Workload;

pub use limits::{explain, explain_provider, worst_case, WorstCase};

/// What `tokengate check` reads for an environment variable that is not set: a value every
/// field that reads one (a Redis URL, a password) takes.
const STAND_IN: &str = "redis://127.0.0.1:6379/0";

/// What an input file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A limits file (`--limits`).
    Limits,
    /// A provider file (`--provider`): a limits file with a `[provider]` table.
    Provider,
    /// A workload file (`--workload`).
    Workload,
}

/// The keys only a workload file has at its top level.
const WORKLOAD_KEYS: [&str; 8] = [
    "duration",
    "concurrency",
    "max_wait",
    "retries",
    "max_tokens",
    "arrivals",
    "input_tokens",
    "latency",
];

/// What `text` is, from its top-level keys; a file that is not TOML is a limits file (whose
/// reader reports the syntax error).
pub fn kind(text: &str) -> FileKind {
    let Ok(root) = DeTable::parse(text) else {
        return FileKind::Limits;
    };
    let has = |name: &str| root.get_ref().iter().any(|(k, _)| *k.get_ref() == name);
    let models_listed = root
        .get_ref()
        .iter()
        .any(|(k, v)| *k.get_ref() == "models" && matches!(v.get_ref(), DeValue::Array(_)));
    if models_listed || WORKLOAD_KEYS.iter().any(|k| has(k)) {
        FileKind::Workload
    } else if has("provider") {
        FileKind::Provider
    } else {
        FileKind::Limits
    }
}

/// Validates the file at `path` (a limits, provider or workload file) and explains it.
///
/// # Errors
/// The file cannot be read or is invalid: the message names the file, line, column and field.
pub fn check(path: &Path) -> Result<String, Error> {
    let text = crate::input::read_text(path, "file to check")?;
    let name = path.display().to_string();
    match kind(&text) {
        FileKind::Limits => {
            // A variable the file reads that is not set here (a secret only production has)
            // gets a stand-in: the rest of the file is checked, and the explanation says so.
            let unset = std::cell::RefCell::new(Vec::new());
            let env = |var: &str| match std::env::var(var) {
                Err(std::env::VarError::NotPresent) => {
                    unset.borrow_mut().push(var.to_owned());
                    Ok(STAND_IN.to_owned())
                }
                other => other,
            };
            let config = Config::from_toml_str_with_env(&text, &name, &env)?;
            Ok(explain(&config, &unset.into_inner()))
        }
        FileKind::Provider => explain_provider(&ProviderSpec::from_toml_str(&text, &name)?),
        FileKind::Workload => Ok(workload::explain(&Workload::from_toml_str(&text, &name)?)),
    }
}
