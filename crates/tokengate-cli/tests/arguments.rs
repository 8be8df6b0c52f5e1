//! A bad argument fails as every other error does, with exit status 1 (not clap's 2), and
//! `--help` says so.

mod common;

use common::{quick, text};

#[test]
fn a_bad_argument_exits_1_and_says_what_was_wrong() {
    for (args, needle) in [
        (&["simulate", "--bogus"][..], "--bogus"),
        (&["simulate", "--duration", "1w"][..], "\"2d12h\""),
        (&["simulate", "--duration", "0s"][..], "longer than 0"),
        (&["simulate", "--seed", "seven"][..], "seven"),
        (&["check"][..], "<"),
        (&["frobnicate"][..], "frobnicate"),
        (&[][..], "Usage"),
    ] {
        let out = quick(args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: no {needle:?} in {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn help_and_version_succeed_and_help_gives_the_exit_statuses() {
    let out = quick(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    assert!(
        help.contains("Exit status: 0 on success; 1 on any error (a bad argument"),
        "{help}"
    );
    let out = quick(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).starts_with("tokengate "));
}
