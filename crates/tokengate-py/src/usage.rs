//! A Python usage object (or reply, or dict) as the crate's [`Usage`], read by the crate's own
//! reader of OpenAI and Anthropic usage ([`ReplyUsage`]).

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::{Map, Number, Value};
use tokengate::feedback::usage::{CachedInput, ReplyUsage};
use tokengate::Usage;

use crate::errors;

/// The fields read from an object that is neither a dict nor a pydantic model.
const FIELDS: &[&str] = &[
    "object",
    "type",
    "usage",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "prompt_tokens_details",
    "completion_tokens_details",
    "input_tokens_details",
    "output_tokens_details",
    "cached_tokens",
];

/// How deep a usage object may nest.
const MAX_DEPTH: usize = 8;

/// The usage `object` reports: an OpenAI or Anthropic usage (SDK object or dict), or a whole
/// reply holding one in `usage`.
///
/// # Errors
/// `UsageError` naming what is missing or wrong.
pub(crate) fn of_object(object: &Bound<'_, PyAny>) -> PyResult<Usage> {
    let value = to_json(object, 0)?;
    let reply = match value {
        Value::Object(ref fields) if fields.contains_key("usage") => value,
        other => {
            let mut reply = Map::new();
            reply.insert("usage".into(), other);
            Value::Object(reply)
        }
    };
    let read = ReplyUsage::from_value(&reply).map_err(|e| errors::usage_error(&e.to_string()))?;
    Ok(read.usage(CachedInput::default()))
}

/// `object` as JSON: dicts, lists, numbers, strings, pydantic models (`model_dump`), and other
/// objects by the usage fields they have.
fn to_json(object: &Bound<'_, PyAny>, depth: usize) -> PyResult<Value> {
    if depth > MAX_DEPTH {
        return Err(errors::usage_error("the usage object nests too deep"));
    }
    if object.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(b) = object.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if object.is_instance_of::<PyInt>() {
        return Ok(match object.extract::<u64>() {
            Ok(n) => Value::Number(n.into()),
            Err(_) => match object.extract::<i64>() {
                Ok(n) => Value::Number(n.into()),
                // Beyond 64 bits: the reader says so, naming the field.
                Err(_) => Number::from_f64(f64::MAX).map_or(Value::Null, Value::Number),
            },
        });
    }
    if let Ok(f) = object.cast::<PyFloat>() {
        return Ok(Number::from_f64(f.value()).map_or(Value::Null, Value::Number));
    }
    if let Ok(s) = object.cast::<PyString>() {
        return Ok(Value::String(s.to_str()?.to_owned()));
    }
    if let Ok(dict) = object.cast::<PyDict>() {
        let mut fields = Map::new();
        for (key, value) in dict.iter() {
            fields.insert(key.str()?.to_str()?.to_owned(), to_json(&value, depth + 1)?);
        }
        return Ok(Value::Object(fields));
    }
    if object.is_instance_of::<PyList>() || object.is_instance_of::<PyTuple>() {
        let mut items = Vec::new();
        for item in object.try_iter()? {
            items.push(to_json(&item?, depth + 1)?);
        }
        return Ok(Value::Array(items));
    }
    // pydantic models: the OpenAI and Anthropic SDKs' objects.
    if let Ok(dump) = object.getattr("model_dump") {
        if dump.is_callable() {
            return to_json(&dump.call0()?, depth + 1);
        }
    }
    let mut fields = Map::new();
    for name in FIELDS {
        if let Ok(value) = object.getattr(*name) {
            if !value.is_none() && !value.is_callable() {
                fields.insert((*name).to_owned(), to_json(&value, depth + 1)?);
            }
        }
    }
    if fields.is_empty() {
        let kind = object.get_type().name()?.to_string();
        return Err(errors::usage_error(&format!(
            "cannot read a usage from a {kind}: give an OpenAI or Anthropic usage (or reply), a \
             dict with prompt_tokens/completion_tokens or input_tokens/output_tokens, or \
             input=/output="
        )));
    }
    Ok(Value::Object(fields))
}
