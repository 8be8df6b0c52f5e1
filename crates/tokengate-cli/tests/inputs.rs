//! Input files (limits, workload, provider, and `check`'s limits file) are read with a bound:
//! a regular file of at most 16 MiB. A FIFO, a directory or `/dev/zero` is refused at once with
//! a clear error, not read forever.

mod common;

use std::path::Path;

use common::{fails_with, scratch};

/// Every way the command reads an input file, with what the message calls it.
fn readers(path: &str) -> Vec<(Vec<&str>, &'static str)> {
    vec![
        (vec!["simulate", "--limits", path], "limits file"),
        (vec!["simulate", "--workload", path], "workload file"),
        (vec!["simulate", "--provider", path], "provider file"),
        (vec!["check", path], "file to check"),
    ]
}

fn refused_everywhere(path: &str, because: &str) {
    for (args, what) in readers(path) {
        fails_with(
            &args,
            &[&format!("{path}: cannot read the {what}: "), because],
        );
    }
}

#[test]
fn a_fifo_is_refused_not_waited_on() {
    let dir = scratch("fifo");
    let fifo = dir.join("limits.toml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    refused_everywhere(
        fifo.to_str().unwrap(),
        "it is a FIFO (named pipe), not a regular file",
    );
}

#[test]
fn dev_zero_is_refused_not_read_forever() {
    assert!(Path::new("/dev/zero").exists());
    refused_everywhere("/dev/zero", "it is a character device, not a regular file");
}

#[test]
fn a_directory_is_refused() {
    let dir = scratch("input-dir");
    refused_everywhere(
        dir.to_str().unwrap(),
        "it is a directory, not a regular file",
    );
}

#[test]
fn a_file_above_16_mib_is_refused_naming_the_bound() {
    let dir = scratch("big");
    let big = dir.join("big.toml");
    // Sparse: no 16 MiB written to disk.
    let file = std::fs::File::create(&big).unwrap();
    file.set_len(16 * 1024 * 1024 + 1).unwrap();
    refused_everywhere(
        big.to_str().unwrap(),
        "it is 16777217 bytes, above the bound of 16 MiB (16777216 bytes) on an input file",
    );
}

#[test]
fn a_file_that_is_not_utf8_is_named() {
    let dir = scratch("latin1");
    let path = dir.join("limits.toml");
    std::fs::write(&path, b"# caf\xe9\n[models.m]\nrequests_per_minute = 5\n").unwrap();
    refused_everywhere(
        path.to_str().unwrap(),
        "it is not UTF-8 text (byte 5 is not)",
    );
}
