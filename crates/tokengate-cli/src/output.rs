//! The files a run writes (`--json`, `--log`, `--chart`): opened before the run, so that a
//! path that cannot be written fails in milliseconds with its flag and path, rather than
//! after the run, losing its report; written when the run ends.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::Error;

/// One output file, open for writing; what it held is replaced only when it is written.
#[derive(Debug)]
pub struct OutputFile {
    flag: &'static str,
    path: PathBuf,
    file: File,
    /// Made by [`open`](Self::open): removed again when the run fails.
    created: bool,
}

impl OutputFile {
    /// Opens `path`, given with `--flag`, for writing (creating it, leaving what it holds
    /// until it is written).
    ///
    /// # Errors
    /// A directory, a missing directory, or any other reason it cannot be written, naming the
    /// flag and the path.
    pub fn open(flag: &'static str, path: &Path) -> Result<Self, Error> {
        let shown = path.display();
        if path.is_dir() {
            return Err(Error::new(format!(
                "--{flag} {shown}: is a directory: give a file name, e.g. {}",
                path.join(example_name(flag)).display()
            )));
        }
        let created = std::fs::symlink_metadata(path).is_err();
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| {
                let dir = path
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty() && !d.is_dir());
                match dir {
                    Some(dir) => Error::new(format!(
                        "--{flag} {shown}: cannot create the file: the directory {} does not exist: create it first, or give another path",
                        dir.display()
                    )),
                    None => Error::new(format!(
                        "--{flag} {shown}: cannot open the file for writing: {e}"
                    )),
                }
            })?;
        Ok(Self {
            flag,
            path: path.to_owned(),
            file,
            created,
        })
    }

    /// The path given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The flag that named it: `json`, `log`, `chart`.
    pub fn flag(&self) -> &'static str {
        self.flag
    }

    /// Replaces what the file holds with what `write` writes; `what` names the content in
    /// errors ("the JSON report").
    ///
    /// # Errors
    /// When the file cannot be written, naming it.
    pub fn write(
        &self,
        what: &str,
        write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<(), Error> {
        let fail = |e: std::io::Error| {
            Error::new(format!(
                "--{} {}: cannot write {what}: {e}",
                self.flag,
                self.path.display()
            ))
        };
        // A regular file is emptied first; a device or a pipe (/dev/stdout) is written as is.
        if self.file.metadata().is_ok_and(|m| m.is_file()) {
            self.file.set_len(0).map_err(fail)?;
        }
        let mut out = BufWriter::new(&self.file);
        write(&mut out).map_err(fail)?;
        out.flush().map_err(fail)
    }

    /// Removes the file if [`open`](Self::open) made it (the run failed: leave nothing
    /// behind).
    pub fn discard(self) {
        if self.created {
            drop(self.file);
            let _ = std::fs::remove_file(&self.path);
        }
    }

    /// Where it is, resolved (symbolic links, `..`): two names of one file compare equal.
    fn identity(&self) -> PathBuf {
        std::fs::canonicalize(&self.path).unwrap_or_else(|_| self.path.clone())
    }
}

fn example_name(flag: &str) -> &'static str {
    match flag {
        "json" => "report.json",
        "log" => "admissions.jsonl",
        _ => "report.svg",
    }
}

/// The output files of a run, each opened before it.
#[derive(Debug, Default)]
pub struct Outputs {
    files: Vec<OutputFile>,
}

impl Outputs {
    /// Opens every output given (`(flag, path)`), and refuses one that is also an input
    /// (`(flag, path)`: it would be overwritten) or another output.
    ///
    /// # Errors
    /// The first output that cannot be written, or that names an input or another output.
    pub fn open(
        outputs: &[(&'static str, Option<&Path>)],
        inputs: &[(&'static str, Option<&Path>)],
    ) -> Result<Self, Error> {
        let mut opened = Outputs::default();
        for &(flag, path) in outputs {
            let Some(path) = path else { continue };
            let file = match OutputFile::open(flag, path) {
                Ok(file) => file,
                Err(e) => {
                    opened.discard();
                    return Err(e);
                }
            };
            if let Err(e) = opened.clash(&file, inputs) {
                file.discard();
                opened.discard();
                return Err(e);
            }
            opened.files.push(file);
        }
        Ok(opened)
    }

    /// Refuses `file` when it is an input or an output already opened.
    fn clash(
        &self,
        file: &OutputFile,
        inputs: &[(&'static str, Option<&Path>)],
    ) -> Result<(), Error> {
        let me = file.identity();
        for &(flag, path) in inputs {
            let Some(path) = path else { continue };
            if std::fs::canonicalize(path).is_ok_and(|p| p == me) {
                return Err(Error::new(format!(
                    "--{} {}: is the --{flag} file, which the run reads: give the output another name",
                    file.flag,
                    file.path.display()
                )));
            }
        }
        if let Some(other) = self.files.iter().find(|o| o.identity() == me) {
            return Err(Error::new(format!(
                "--{} {} and --{} {} are one file: give each output its own",
                other.flag,
                other.path.display(),
                file.flag,
                file.path.display()
            )));
        }
        Ok(())
    }

    /// The file given with `--flag`, if any.
    pub fn get(&self, flag: &str) -> Option<&OutputFile> {
        self.files.iter().find(|f| f.flag == flag)
    }

    /// Every file opened, in the order given.
    pub fn files(&self) -> &[OutputFile] {
        &self.files
    }

    /// Removes the files the run made (it failed).
    pub fn discard(self) {
        for file in self.files {
            file.discard();
        }
    }
}
