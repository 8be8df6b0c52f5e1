//! A reply's headers, from whatever holds them in Python, for the crate's reader of rate-limit
//! headers ([`tokengate::feedback::ProviderReport`]).

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

/// One header's name or value: `str` or `bytes`.
fn bytes_of(value: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(b) = value.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    Ok(value.str()?.to_str()?.as_bytes().to_vec())
}

/// The (name, value) pairs of `headers`: a dict, an `httpx.Headers` (every value of a repeated
/// header), any mapping with `items()`, or an iterable of pairs.
pub(crate) fn pairs(headers: &Bound<'_, PyAny>) -> PyResult<Vec<(Vec<u8>, Vec<u8>)>> {
    let items = if let Ok(dict) = headers.cast::<PyDict>() {
        dict.items().into_any()
    } else if let Ok(multi) = headers.getattr("multi_items") {
        multi.call0()?
    } else if let Ok(items) = headers.getattr("items") {
        items.call0()?
    } else {
        headers.clone()
    };
    let mut pairs = Vec::new();
    for item in items.try_iter()? {
        let (name, value): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item?.extract()?;
        pairs.push((bytes_of(&name)?, bytes_of(&value)?));
    }
    Ok(pairs)
}
