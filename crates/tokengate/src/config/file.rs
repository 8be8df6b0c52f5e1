//! Reading a limits file from disk, bounded: a regular file of at most [`MAX_FILE_BYTES`].

use std::path::Path;

/// The largest limits file read: far above any hand-written file, and a bound on what a
/// wrong path (a log, a device) can cost.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// The text of the regular file at `path`, at most [`MAX_FILE_BYTES`]; or why not.
pub(super) fn read_bounded(path: &Path) -> Result<String, (std::io::ErrorKind, String)> {
    use std::io::Read;
    let fail = |e: std::io::Error| (e.kind(), format!("cannot read the file: {e}"));
    // Checked before opening: opening a FIFO waits for a writer.
    let meta = std::fs::metadata(path).map_err(fail)?;
    if !meta.is_file() {
        return Err((
            std::io::ErrorKind::InvalidInput,
            "not a regular file (a directory, a FIFO or a device): give the path of a limits file"
                .to_owned(),
        ));
    }
    let file = std::fs::File::open(path).map_err(fail)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(fail)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err((
            std::io::ErrorKind::InvalidData,
            format!("the file is larger than {MAX_FILE_BYTES} bytes (16 MiB): a limits file is a few kilobytes"),
        ));
    }
    String::from_utf8(bytes).map_err(|_| {
        (
            std::io::ErrorKind::InvalidData,
            "the file is not UTF-8 text".to_owned(),
        )
    })
}
