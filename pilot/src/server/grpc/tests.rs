use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

#[tokio::test]
async fn a_connection_without_a_maximum_age_keeps_working() {
    let (client, server) = tokio::io::duplex(64);
    let mut conn = Conn::new(server, (), None);
    let mut client = client;
    client.write_all(b"ping").await.expect("write");
    let mut buf = [0u8; 4];
    conn.read_exact(&mut buf).await.expect("read");
    assert_eq!(&buf, b"ping");
}

#[tokio::test]
async fn a_waiting_read_fails_when_the_deadline_passes() {
    let (_client, server) = tokio::io::duplex(64);
    let mut conn = Conn::new(server, (), Some(Duration::from_millis(50)));
    let started = Instant::now();
    let mut buf = [0u8; 4];
    let err = conn.read(&mut buf).await.expect_err("aged out");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
    assert!(started.elapsed() >= Duration::from_millis(50));
    // Writes fail too: the connection is finished.
    let err = conn.write_all(b"late").await.expect_err("aged out");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
}

#[test]
fn the_hard_deadline_is_age_plus_grace() {
    let settings = GrpcSettings {
        keepalive_interval: Duration::from_secs(30),
        keepalive_timeout: Duration::from_secs(10),
        max_connection_age: Some(Duration::from_secs(60)),
        max_connection_age_grace: MAX_CONNECTION_AGE_GRACE,
        max_concurrent_streams: 100,
    };
    assert_eq!(settings.hard_deadline(), Some(Duration::from_secs(70)));
    let unlimited = GrpcSettings {
        max_connection_age: None,
        ..settings
    };
    assert_eq!(unlimited.hard_deadline(), None);
}
