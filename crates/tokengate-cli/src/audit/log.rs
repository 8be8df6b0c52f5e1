//! Reading an admission log: JSON Lines, one admission a line, as `tokengate simulate --log`
//! writes them. A line needs `t` (seconds from the start); `model` and `tenant` say which
//! budgets it counts on (`key` stands for the model when `model` is absent); `status` 429
//! marks a call the provider refused; `requests` (1 when absent), `input_tokens`,
//! `output_tokens` and any dimension of one's own are the amounts it counts (0 when absent).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use serde_json::{Map, Value};

use crate::error::Error;
use crate::input;

/// The longest line read: far above any admission's.
const MAX_LINE: u64 = 1024 * 1024;

/// One admission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// When, ns from the start.
    pub t: u64,
    /// Index into [`Log::models`], if the line names a model.
    pub model: Option<usize>,
    /// Index into [`Log::tenants`], if the line names a tenant.
    pub tenant: Option<usize>,
    /// Whether the provider refused it (status 429).
    pub refused: bool,
    /// Requests it counts.
    pub requests: u64,
    /// Input tokens it counts.
    pub input: u64,
    /// Output tokens it counts.
    pub output: u64,
    /// The amounts of the dimensions of one's own asked for, in their order.
    pub custom: Vec<u64>,
}

/// A log, its lines in time order.
#[derive(Debug, Clone, Default)]
pub struct Log {
    /// The lines.
    pub lines: Vec<Line>,
    /// The models named.
    pub models: Vec<String>,
    /// The tenants named.
    pub tenants: Vec<String>,
}

/// Interns names.
#[derive(Default)]
struct Names {
    names: Vec<String>,
    index: HashMap<String, usize>,
}

impl Names {
    fn get(&mut self, name: &str) -> usize {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        self.names.push(name.to_owned());
        self.index.insert(name.to_owned(), self.names.len() - 1);
        self.names.len() - 1
    }
}

/// Reads the log at `path`, with the amounts of the dimensions named in `custom`.
///
/// # Errors
/// The file cannot be read, a line is not a JSON object, or a field is not what it should be:
/// the message names the file, the line and the field.
pub(super) fn read(path: &Path, custom: &[String]) -> Result<Log, Error> {
    let (file, _) = input::open_regular(path, "admission log", "JSON Lines file")?;
    let shown = path.display().to_string();
    let mut reader = BufReader::new(file);
    let (mut models, mut tenants) = (Names::default(), Names::default());
    let mut lines = Vec::new();
    let mut buf = Vec::new();
    for n in 1.. {
        buf.clear();
        let read = reader
            .by_ref()
            .take(MAX_LINE + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|e| {
                Error::new(format!(
                    "{shown}: cannot read the admission log: line {n}: {e}"
                ))
            })?;
        if read == 0 {
            break;
        }
        if buf.len() as u64 > MAX_LINE {
            return Err(Error::new(format!(
                "{shown}:{n}: the line is longer than 1 MiB: an admission log has one short JSON object a line"
            )));
        }
        let text = String::from_utf8_lossy(&buf);
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let at = |message: String| Error::new(format!("{shown}:{n}: {message}"));
        let object: Map<String, Value> = match serde_json::from_str(text) {
            Ok(Value::Object(o)) => o,
            Ok(_) => return Err(at("expected a JSON object, one admission a line".into())),
            Err(e) => return Err(at(format!("not JSON: {e}"))),
        };
        let field = |name: &str| object.get(name).filter(|v| !v.is_null());
        let t = match field("t").and_then(Value::as_f64) {
            Some(t) if (0.0..1.8e10).contains(&t) => (t * 1e9).round() as u64,
            Some(_) | None => {
                return Err(at(format!(
                    "field `t`: expected the admission's time in seconds from the start (a number, at least 0), found {}",
                    field("t").map_or("nothing".to_owned(), Value::to_string)
                )))
            }
        };
        let count = |name: &str, absent: u64| -> Result<u64, Error> {
            match field(name) {
                None => Ok(absent),
                Some(v) => v.as_u64().ok_or_else(|| {
                    at(format!(
                        "field `{name}`: expected a whole number of at least 0, found {v}"
                    ))
                }),
            }
        };
        let name = |name: &str| -> Result<Option<&str>, Error> {
            match field(name) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(v) => Err(at(format!("field `{name}`: expected a string, found {v}"))),
            }
        };
        let model = match name("model")? {
            Some(m) => Some(m),
            None => name("key")?,
        };
        lines.push(Line {
            t,
            model: model.map(|m| models.get(m)),
            tenant: name("tenant")?.map(|t| tenants.get(t)),
            refused: count("status", 200)? == 429,
            requests: count("requests", 1)?,
            input: count("input_tokens", 0)?,
            output: count("output_tokens", 0)?,
            custom: custom
                .iter()
                .map(|c| count(c, 0))
                .collect::<Result<_, _>>()?,
        });
    }
    // In time order, admissions at one instant as written.
    lines.sort_by_key(|l| l.t);
    Ok(Log {
        lines,
        models: models.names,
        tenants: tenants.names,
    })
}
