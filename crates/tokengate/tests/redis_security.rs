//! The Redis store as a Redis user restricted to its keys and commands (the rule docs/redis.md
//! gives, read from there), and over TLS (`rediss://`, feature `redis-tls`), on redis-servers
//! the tests start, with a CA and certificates made at test time.
//!
//! Run: `cargo test -p tokengate --features redis-tls,config,json --test redis_security`.

mod common;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::redis_acl::{budgets, documented_rule, every_call, user_url, DOCS};
use common::redis_server::RedisServer;
use common::store_cases as cases;
use redis::aio::ConnectionManager;
use tokengate::redis::RedisStore;
use tokengate::store::{Ask, Store, StoreError};
use tokengate::{Cost, ManualClock};

/// The library the store loads, whose commands the rule must allow.
const LIBRARY: &str = include_str!("../src/redis/decide.lua");

/// The rule without `+function|load`: the library is then an administrator's to load.
fn rule_without_function_load() -> Vec<String> {
    let rule = documented_rule();
    let kept: Vec<String> = rule
        .iter()
        .filter(|w| *w != "+function|load")
        .cloned()
        .collect();
    assert_eq!(kept.len() + 1, rule.len(), "the rule grants +function|load");
    kept
}

/// Runs `test` on a current-thread runtime, within 60 s.
fn block_on<F: Future>(test: F) -> F::Output {
    common::bounded::block_on_within(0, Duration::from_secs(60), test)
}

/// A connection as the default user (no password: the server's administrator).
async fn admin(server: &RedisServer) -> ConnectionManager {
    let client = redis::Client::open(server.url()).unwrap();
    ConnectionManager::new(client).await.expect("connects")
}

/// Applies `rule` (the words after `ACL SETUSER`).
async fn set_user(admin: &mut ConnectionManager, rule: &[String]) {
    let () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(rule)
        .query_async(admin)
        .await
        .expect("ACL SETUSER takes the rule");
}

/// Whether `error` is Redis's `NOPERM` (redis-rs writes it `NoPerm`).
fn no_permission(error: &str) -> bool {
    error.to_ascii_uppercase().contains("NOPERM")
}

/// Error text, for the checks on refusals.
fn error_of<T: std::fmt::Debug>(result: Result<T, StoreError>) -> String {
    match result {
        Err(StoreError::Backend(e)) => e,
        other => panic!("expected a backend error, got {other:?}"),
    }
}

/// How many libraries the server holds.
async fn libraries(admin: &mut ConnectionManager) -> usize {
    let list: Vec<redis::Value> = redis::cmd("FUNCTION")
        .arg("LIST")
        .query_async(admin)
        .await
        .unwrap();
    list.len()
}

async fn function_flush(admin: &mut ConnectionManager) {
    let () = redis::cmd("FUNCTION")
        .arg("FLUSH")
        .query_async(admin)
        .await
        .unwrap();
}

/// What the user at `url` may not do: keys outside the prefix, by hand or through the store's
/// own function; commands the rule does not grant.
async fn nothing_outside_the_prefix(url: &str, admin: &mut ConnectionManager) {
    let client = redis::Client::open(url).unwrap();
    let mut user = client.get_multiplexed_async_connection().await.unwrap();
    let refused = |r: redis::RedisResult<redis::Value>, what: &str| {
        let e = r.expect_err(what).to_string();
        assert!(no_permission(&e), "{what}: {e}");
    };
    refused(
        redis::cmd("SET")
            .arg("other:key")
            .arg(1)
            .query_async(&mut user)
            .await,
        "SET outside the prefix",
    );
    refused(
        redis::cmd("GET")
            .arg("other:key")
            .query_async(&mut user)
            .await,
        "GET outside the prefix",
    );
    refused(
        redis::cmd("FUNCTION")
            .arg("FLUSH")
            .query_async(&mut user)
            .await,
        "FUNCTION FLUSH",
    );
    refused(
        redis::cmd("FLUSHALL").query_async(&mut user).await,
        "FLUSHALL",
    );
    // A key inside the prefix, with a command the rule does not grant.
    refused(
        redis::cmd("HSET")
            .arg("tokengate:x")
            .arg("f")
            .arg(1)
            .query_async(&mut user)
            .await,
        "HSET",
    );
    // The store itself, told to use another prefix.
    let other = RedisStore::connect(url)
        .await
        .unwrap()
        .namespace("other", "default");
    let budgets = budgets();
    let cost = Cost::request();
    let e = error_of(other.acquire(Ask::new(&budgets, &cost)).await);
    assert!(no_permission(&e), "{e}");
    // Nothing was written outside the prefix.
    let outside: Vec<String> = redis::cmd("KEYS")
        .arg("other*")
        .query_async(admin)
        .await
        .unwrap();
    assert_eq!(outside, Vec::<String>::new());
}

#[test]
fn the_rule_grants_exactly_the_commands_the_store_sends() {
    // The library's: every `call('COMMAND'`.
    let mut sent: BTreeSet<String> = LIBRARY
        .split("call('")
        .skip(1)
        .map(|rest| rest.split('\'').next().unwrap().to_ascii_lowercase())
        .collect();
    assert!(sent.contains("time") && sent.contains("zadd"), "{sent:?}");
    // The store's own (src/redis/store.rs, src/redis/script.rs).
    for own in ["fcall", "function|load", "scan", "unlink", "subscribe"] {
        sent.insert(own.to_owned());
    }
    let granted: BTreeSet<String> = documented_rule()
        .iter()
        .filter_map(|w| w.strip_prefix('+'))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        granted, sent,
        "the documented rule against the commands sent"
    );
    // And the docs' list says the same.
    for command in &sent {
        let word = command.replace('|', " ").to_ascii_uppercase();
        assert!(
            DOCS.contains(&format!("`{word}`")),
            "docs/redis.md names {word}"
        );
    }
    let rule = documented_rule();
    assert!(rule.contains(&"~tokengate:*".to_owned()), "{rule:?}");
    assert_eq!(rule[1], "reset", "the rule starts from nothing: {rule:?}");
}

#[test]
fn a_store_runs_as_the_documented_user() {
    let server = RedisServer::start();
    block_on(async {
        let mut admin = admin(&server).await;
        let rule = documented_rule();
        set_user(&mut admin, &rule).await;
        let url = user_url("redis", server.port(), &rule);
        let store = RedisStore::connect(&url)
            .await
            .expect("connects as the user");
        // A new server: the first call loads the library, as the user.
        assert_eq!(libraries(&mut admin).await, 0);
        every_call(&store).await;
        assert_eq!(libraries(&mut admin).await, 1);
        // Flushed by an administrator: loaded again by the user's next call.
        function_flush(&mut admin).await;
        every_call(&store).await;
        assert_eq!(libraries(&mut admin).await, 1);
        nothing_outside_the_prefix(&url, &mut admin).await;
        // A wrong password is refused.
        let wrong = url.replace(":secret@", ":wrong@");
        assert_ne!(wrong, url);
        assert!(RedisStore::connect(&wrong).await.is_err());
    });
}

#[test]
fn the_store_cases_hold_as_the_documented_user() {
    let server = RedisServer::start();
    block_on(async {
        let mut admin = admin(&server).await;
        let rule = documented_rule();
        set_user(&mut admin, &rule).await;
        let client = redis::Client::open(user_url("redis", server.port(), &rule)).unwrap();
        let connection = ConnectionManager::new(client).await.expect("connects");
        let fresh = || {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let clock = ManualClock::new();
            let namespace = format!("t{}", NEXT.fetch_add(1, Ordering::Relaxed));
            let store = RedisStore::with_connection(connection.clone())
                .namespace("tokengate", &namespace)
                .lease(Duration::from_secs(30))
                .with_manual_clock(clock.clone());
            (store, clock)
        };
        cases::replays_the_request_vectors(fresh, "").await;
        let (store, clock) = fresh();
        cases::in_flight_slots_are_leases(&store, &clock, "", Duration::from_secs(30)).await;
        let (store, clock) = fresh();
        cases::snapshots_pauses_and_resets(&store, &clock, "").await;
        let (store, clock) = fresh();
        cases::a_cancelled_reservation_gives_its_place_back(&store, &clock, "").await;
    });
}

#[test]
fn without_function_load_an_administrator_loads_the_library() {
    let server = RedisServer::start();
    block_on(async {
        let mut admin = admin(&server).await;
        let rule = rule_without_function_load();
        set_user(&mut admin, &rule).await;
        let store = RedisStore::connect(&user_url("redis", server.port(), &rule))
            .await
            .expect("connects as the user");
        let budgets = budgets();
        let cost = Cost::request();
        // Nothing loaded: the call fails, saying why.
        let e = error_of(store.acquire(Ask::new(&budgets, &cost)).await);
        assert!(no_permission(&e) && e.contains("'function|load'"), "{e}");
        assert_eq!(libraries(&mut admin).await, 0);
        // An administrator loads it: the store's calls go through.
        let name: String = redis::cmd("FUNCTION")
            .arg("LOAD")
            .arg(RedisStore::library_code())
            .query_async(&mut admin)
            .await
            .unwrap();
        assert_eq!(name, RedisStore::library_name());
        every_call(&store).await;
        assert_eq!(libraries(&mut admin).await, 1);
    });
}

/// TLS: a CA, a server certificate, a client certificate, and a CA nobody uses, made at test
/// time with rcgen.
#[cfg(feature = "redis-tls")]
mod tls {
    use std::path::PathBuf;
    use std::sync::LazyLock;

    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    use redis::{ClientTlsConfig, TlsCertificates};

    use super::*;

    /// Certificates and keys, PEM.
    struct Certs {
        ca: String,
        server_cert: String,
        server_key: String,
        client_cert: String,
        client_key: String,
        other_ca: String,
    }

    /// A directory of files for redis-server, removed on drop.
    struct Dir(PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A CA named `name`: leaves name their issuer, and a leaf named as its CA would pass for
    /// self-signed (OpenSSL refuses it so).
    fn ca_params(name: &str) -> CertificateParams {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params
    }

    fn leaf(
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
        issuer: &Issuer<'_, KeyPair>,
    ) -> (String, String) {
        let mut params =
            CertificateParams::new(names.iter().map(|&n| n.to_owned()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    static CERTS: LazyLock<Certs> = LazyLock::new(|| {
        let ca_key = KeyPair::generate().unwrap();
        let ca = ca_params("tokengate test CA")
            .self_signed(&ca_key)
            .unwrap()
            .pem();
        let issuer = Issuer::new(ca_params("tokengate test CA"), ca_key);
        let (server_cert, server_key) = leaf(
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
            &issuer,
        );
        let (client_cert, client_key) =
            leaf(&["tokengate"], ExtendedKeyUsagePurpose::ClientAuth, &issuer);
        let other_ca = ca_params("another CA")
            .self_signed(&KeyPair::generate().unwrap())
            .unwrap()
            .pem();
        Certs {
            ca,
            server_cert,
            server_key,
            client_cert,
            client_key,
            other_ca,
        }
    });

    /// A server that speaks TLS on a port of its own (and plain text on `server.port()`, for
    /// the administrator), asking clients for a certificate when `auth_clients`; and the
    /// directory of its certificate files.
    fn tls_server(auth_clients: bool) -> (RedisServer, u16, Dir) {
        static STARTED: AtomicU32 = AtomicU32::new(0);
        let dir = Dir(std::env::temp_dir().join(format!(
            "tokengate-tls-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        )));
        std::fs::create_dir_all(&dir.0).unwrap();
        for (name, pem) in [
            ("ca.pem", &CERTS.ca),
            ("server.pem", &CERTS.server_cert),
            ("server.key", &CERTS.server_key),
        ] {
            std::fs::write(dir.0.join(name), pem).unwrap();
        }
        let file = |name: &str| dir.0.join(name).to_str().unwrap().to_owned();
        let tls_port = common::redis_server::free_port();
        let server = RedisServer::start_with(&[
            "--tls-port",
            &tls_port.to_string(),
            "--tls-cert-file",
            &file("server.pem"),
            "--tls-key-file",
            &file("server.key"),
            "--tls-ca-cert-file",
            &file("ca.pem"),
            "--tls-auth-clients",
            if auth_clients { "yes" } else { "no" },
        ]);
        (server, tls_port, dir)
    }

    fn tls_client(url: &str, root: &str, client: bool) -> redis::Client {
        let client_tls = client.then(|| ClientTlsConfig {
            client_cert: CERTS.client_cert.clone().into_bytes(),
            client_key: CERTS.client_key.clone().into_bytes(),
        });
        redis::Client::build_with_tls(
            url,
            TlsCertificates {
                client_tls,
                root_cert: Some(root.as_bytes().to_vec()),
            },
        )
        .unwrap()
    }

    #[test]
    fn a_store_runs_over_tls_as_the_documented_user() {
        let (server, tls_port, _dir) = tls_server(false);
        block_on(async {
            let mut admin = admin(&server).await;
            let rule = documented_rule();
            set_user(&mut admin, &rule).await;
            let url = user_url("rediss", tls_port, &rule);
            let store = RedisStore::from_client(tls_client(&url, &CERTS.ca, false))
                .await
                .expect("connects over TLS as the user");
            every_call(&store).await;
            function_flush(&mut admin).await;
            every_call(&store).await;
            // A client that trusts another CA is refused the handshake.
            let e =
                error_of(RedisStore::from_client(tls_client(&url, &CERTS.other_ca, false)).await);
            assert!(e.to_lowercase().contains("certificate"), "{e}");
            // Plain text on the TLS port gets nowhere.
            let plain = user_url("redis", tls_port, &rule);
            assert!(RedisStore::connect(&plain).await.is_err());
            // A wrong password over TLS is refused.
            let wrong = url.replace(":secret@", ":wrong@");
            assert!(
                RedisStore::from_client(tls_client(&wrong, &CERTS.ca, false))
                    .await
                    .is_err()
            );
        });
    }

    #[test]
    fn a_server_that_asks_for_client_certificates_takes_the_stores() {
        let (server, tls_port, _dir) = tls_server(true);
        block_on(async {
            let url = format!("rediss://127.0.0.1:{tls_port}/0");
            let store = RedisStore::from_client(tls_client(&url, &CERTS.ca, true))
                .await
                .expect("connects with a client certificate");
            every_call(&store).await;
            // Without one, the server ends the handshake.
            let without = RedisStore::from_client(tls_client(&url, &CERTS.ca, false)).await;
            assert!(without.is_err(), "{without:?}");
            drop(server);
        });
    }

    /// `RedisStore::connect("rediss://…")` trusts the roots of the file `SSL_CERT_FILE` names.
    /// The variable is the process's: the test runs itself again in a process of its own
    /// with it set, rather than set it under the other tests' feet.
    #[test]
    fn connect_trusts_the_roots_ssl_cert_file_names() {
        const CHILD: &str = "TOKENGATE_TEST_SSL_CERT_FILE_CHILD";
        if std::env::var_os(CHILD).is_none() {
            let ca_file = std::env::temp_dir()
                .join(format!("tokengate-tls-ca-{}-child.pem", std::process::id()));
            let child = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "tls::connect_trusts_the_roots_ssl_cert_file_names",
                    "--test-threads=1",
                ])
                .env(CHILD, &ca_file)
                .env("SSL_CERT_FILE", &ca_file)
                .output()
                .expect("the test binary runs");
            let _ = std::fs::remove_file(&ca_file);
            let out = String::from_utf8_lossy(&child.stdout);
            // Passed, and ran: a filter that matched nothing would pass too.
            assert!(
                child.status.success() && out.contains("1 passed"),
                "the test in a process of its own: {}\n{out}\n{}",
                child.status,
                String::from_utf8_lossy(&child.stderr)
            );
            return;
        }
        // In the child: its CA is the one SSL_CERT_FILE names.
        std::fs::write(std::env::var_os(CHILD).unwrap(), &CERTS.ca).unwrap();
        let (server, tls_port, _dir) = tls_server(false);
        block_on(async {
            let mut admin = admin(&server).await;
            let rule = documented_rule();
            set_user(&mut admin, &rule).await;
            let store = RedisStore::connect(&user_url("rediss", tls_port, &rule))
                .await
                .expect("connects over TLS, trusting SSL_CERT_FILE's roots");
            every_call(&store).await;
        });
    }
}
