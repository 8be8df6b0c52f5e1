//! Ctrl-C during a real-time run ends it early and prints the report so far (and writes the
//! outputs), exit status 130. SIGINT is sent with `kill -INT` once the binary says it catches
//! it; every wait is bounded.

#![cfg(unix)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{scratch, text};
use serde_json::Value;

#[test]
fn ctrl_c_in_real_time_prints_the_report_so_far() {
    let dir = scratch("interrupt");
    let json = dir.join("r.json");
    let log = dir.join("a.jsonl");
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("tokengate"))
        .args(["simulate", "--realtime", "--duration", "60s", "--seed", "5"])
        .arg("--json")
        .arg(&json)
        .arg("--log")
        .arg(&log)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    // Kills the child if the test fails before it ends.
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut child = Reap(child);

    // The binary says so once its handler is installed: a SIGINT before it would kill it.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let ready = Instant::now() + Duration::from_secs(5);
    loop {
        let left = ready.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("Ctrl-C stops the run") => break,
            Ok(_) => {}
            Err(e) => panic!("the binary never said it catches Ctrl-C: {e}"),
        }
    }
    // Let some traffic pass.
    std::thread::sleep(Duration::from_millis(1_500));
    let sent = Command::new("kill")
        .args(["-INT", &child.0.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    let interrupted_at = Instant::now();

    let deadline = interrupted_at + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("the child's status") {
            break status;
        }
        assert!(Instant::now() < deadline, "still running 10 s after Ctrl-C");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut BufReader::new(stdout), &mut out).unwrap();
    let out = text(&out);
    assert_eq!(status.code(), Some(130), "{out}");
    assert!(out.contains("interrupted by Ctrl-C"), "{out}");
    assert!(out.contains("requests "), "{out}");
    assert!(out.contains("wrote "), "{out}");

    let r: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r["interrupted"], true);
    let ran = r["duration_secs"].as_f64().unwrap();
    assert!((1.0..30.0).contains(&ran), "ran {ran} s of 60");
    let q = &r["requests"];
    let n = |v: &Value| v.as_u64().unwrap();
    assert!(n(&q["arrived"]) > 0, "{q}");
    assert_eq!(
        n(&q["arrived"]),
        n(&q["completed"]) + n(&q["gave_up"]) + n(&q["unfinished"]) + n(&q["refused"]),
        "every request counted once: {q}"
    );

    // Every admission is in the log, the calls still running at Ctrl-C too, as the provider
    // counted them then.
    let lines: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(lines.len() as u64, n(&q["admitted"]), "{q}");
    let running: Vec<&Value> = lines.iter().filter(|l| l["ended"] == false).collect();
    assert!(!running.is_empty(), "no call was running at Ctrl-C");
    for l in &running {
        assert_eq!(l["status"], 200, "{l}");
        assert_eq!(l["output_tokens"], l["reserved_output_tokens"], "{l}");
        assert_eq!(l["produced_output_tokens"], 0, "{l}");
    }
    assert_eq!(
        lines
            .iter()
            .filter(|l| l["ended"] == true && l["status"] == 200)
            .count() as u64,
        n(&q["completed"]),
        "{q}"
    );
}
