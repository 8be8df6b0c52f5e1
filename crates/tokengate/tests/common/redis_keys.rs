//! What a Redis holds, read with `SCAN` and `PTTL`: every key the store leaves must expire by
//! itself (an idle budget costs no memory), so a key without an expiry is a leak.
#![allow(unreachable_pub)]

/// Every key of the Redis at `url` (`SCAN`), and those of them without an expiry (`PTTL` of
/// -1).
///
/// # Panics
/// When the Redis does not answer.
pub async fn keys_without_expiry(url: &str) -> (Vec<String>, Vec<String>) {
    let client = redis::Client::open(url).expect("a Redis URL");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis answers");
    let (mut keys, mut cursor) = (Vec::new(), 0u64);
    loop {
        let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut connection)
            .await
            .expect("SCAN");
        keys.extend(found);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let mut forever = Vec::new();
    for key in &keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut connection)
            .await
            .expect("PTTL");
        // -2: gone since the scan (expired); -1: no expiry.
        if ttl == -1 {
            forever.push(key.clone());
        }
    }
    (keys, forever)
}
