//! Reading an input file (limits, workload, provider): a regular file only, at most
//! [`MAX_INPUT_BYTES`], UTF-8. A FIFO, a directory or a device such as `/dev/zero` is refused
//! before it is opened rather than read forever, and the read itself stops one byte past the
//! bound, so even a file that grows while it is read is bounded. Every file the command reads
//! goes through [`read_text`].

use std::fs::{File, Metadata};
use std::io::Read;
use std::path::Path;

use tokengate::config::Config;

use crate::error::Error;

/// The largest input file read: 16 MiB, far above any limits or workload file.
pub const MAX_INPUT_BYTES: u64 = 16 * 1024 * 1024;

/// What a file is, when it is not a regular file.
fn kind(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    "not a regular file"
}

/// `{path}: cannot read the {what}: {message}`.
fn cannot_read(path: &Path, what: &str, message: &str) -> Error {
    Error::new(format!(
        "{}: cannot read the {what}: {message}",
        path.display()
    ))
}

/// Opens `path`, the `what` (a `kind` of file: "TOML file", "JSON Lines file" for the
/// message), if it is a regular file, and returns it with its length.
///
/// # Errors
/// The file cannot be opened, or is not a regular file (a FIFO is refused before it is opened:
/// opening it would wait for a writer).
pub fn open_regular(path: &Path, what: &str, kind_of_file: &str) -> Result<(File, u64), Error> {
    let fail = |message: String| cannot_read(path, what, &message);
    let regular = |meta: &Metadata| -> Result<(), Error> {
        if meta.is_file() {
            return Ok(());
        }
        Err(fail(format!(
            "it is {}, not a regular file: give the path of a {kind_of_file}",
            kind(meta)
        )))
    };
    let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
    regular(&meta)?;
    let file = File::open(path).map_err(|e| fail(e.to_string()))?;
    // The file opened may not be the one looked at.
    let opened = file.metadata().map_err(|e| fail(e.to_string()))?;
    regular(&opened)?;
    Ok((file, opened.len()))
}

/// Reads the text of `path`, the `what` ("limits file", "workload file", "provider file").
///
/// # Errors
/// The file cannot be read, is not a regular file, is larger than [`MAX_INPUT_BYTES`], or is
/// not UTF-8: the message names the file, and the bound when it is the cause.
pub fn read_text(path: &Path, what: &str) -> Result<String, Error> {
    let fail = |message: String| cannot_read(path, what, &message);
    let too_large = |what: String| {
        fail(format!(
            "{what} the bound of 16 MiB ({MAX_INPUT_BYTES} bytes) on an input file: give a smaller file"
        ))
    };
    let (file, len) = open_regular(path, what, "TOML file")?;
    if len > MAX_INPUT_BYTES {
        return Err(too_large(format!("it is {len} bytes, above")));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(MAX_INPUT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(e.to_string()))?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(too_large("it grew while read, past".to_owned()));
    }
    String::from_utf8(bytes).map_err(|e| {
        fail(format!(
            "it is not UTF-8 text (byte {} is not): save it as UTF-8",
            e.utf8_error().valid_up_to()
        ))
    })
}

/// Refuses a limits file's `[store]` in a simulation, which keeps its limits in this process
/// on a clock of its own (or in the Redis of `--redis`), never in the file's store.
///
/// # Errors
/// The file has a `[store]`: the message names the file, line and column.
pub fn refuse_store(config: &Config, file: &str) -> Result<(), Error> {
    match config.store() {
        None => Ok(()),
        Some(store) => Err(Error::new(format!(
            "{file}:{}:{}: field `store`: `tokengate simulate` does not use a limits file's \
             [store]: a simulation keeps its limits in this process, on a clock of its own; \
             remove the section (from a copy of the file), and give --redis URL --realtime to \
             keep the client's limits in a Redis",
            store.line(),
            store.column()
        ))),
    }
}

/// Reads a limits file (`--limits`, `tokengate check`) through [`read_text`].
///
/// # Errors
/// As [`read_text`], or the file is not a valid limits file (`FILE:LINE:COL: field ...`).
pub fn read_limits(path: &Path) -> Result<Config, Error> {
    let text = read_text(path, "limits file")?;
    Ok(Config::from_toml_str(&text, &path.display().to_string())?)
}
