use std::convert::Infallible;

use futures::stream;
use http_body::Frame;
use http_body_util::StreamBody;
use prost::bytes::Bytes;
use tonic::Code;

use super::*;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;

fn framed(message: &DiscoveryRequest) -> Vec<u8> {
    let encoded = message.encode_to_vec();
    let mut out = vec![0u8];
    out.extend_from_slice(&u32::try_from(encoded.len()).expect("small").to_be_bytes());
    out.extend_from_slice(&encoded);
    out
}

/// A request body delivered as `chunks`, each one HTTP/2 DATA frame.
fn body(chunks: Vec<Vec<u8>>) -> tonic::body::Body {
    let frames = chunks
        .into_iter()
        .map(|c| Ok::<_, Infallible>(Frame::data(Bytes::from(c))));
    tonic::body::Body::new(StreamBody::new(stream::iter(frames)))
}

fn request(names: usize) -> DiscoveryRequest {
    DiscoveryRequest {
        type_url: "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment".into(),
        resource_names: (0..names)
            .map(|i| format!("outbound|80||svc-{i}.bench-0.svc.cluster.local"))
            .collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn decodes_requests_split_and_joined_across_frames() {
    let (a, b) = (request(3), request(1));
    let mut bytes = framed(&a);
    bytes.extend(framed(&b));
    // One byte per frame, then both in one frame.
    let split: Vec<Vec<u8>> = bytes.iter().map(|b| vec![*b]).collect();
    for chunks in [split, vec![bytes.clone()]] {
        let mut requests = Requests::<DiscoveryRequest>::new(body(chunks), None);
        assert_eq!(requests.message().await.expect("first"), Some(a.clone()));
        assert_eq!(requests.message().await.expect("second"), Some(b.clone()));
        assert_eq!(requests.message().await.expect("end"), None);
    }
}

#[tokio::test]
async fn gives_the_buffer_back_after_a_large_request() {
    let large = request(1000);
    let bytes = framed(&large);
    assert!(bytes.len() > 40_000, "{} bytes", bytes.len());
    let chunks = bytes.chunks(16 * 1024).map(<[u8]>::to_vec).collect();
    let mut requests = Requests::<DiscoveryRequest>::new(body(chunks), None);
    assert_eq!(requests.message().await.expect("decodes"), Some(large));
    assert!(requests.buffer_capacity() <= KEEP_CAPACITY);
}

#[tokio::test]
async fn refuses_a_request_over_the_limit_before_reading_it() {
    let bytes = framed(&request(100));
    let prefix = bytes[..PREFIX_LEN].to_vec();
    let mut requests = Requests::<DiscoveryRequest>::new(body(vec![prefix]), Some(1000));
    let status = requests.message().await.expect_err("over the limit");
    assert_eq!(status.code(), Code::OutOfRange);
}

#[tokio::test]
async fn a_truncated_or_garbled_request_is_an_error() {
    let bytes = framed(&request(3));
    let truncated = bytes[..bytes.len() - 1].to_vec();
    let mut requests = Requests::<DiscoveryRequest>::new(body(vec![truncated]), None);
    assert_eq!(
        requests.message().await.expect_err("truncated").code(),
        Code::Internal
    );

    let garbled = vec![0, 0, 0, 0, 2, 0xff, 0xff];
    let mut requests = Requests::<DiscoveryRequest>::new(body(vec![garbled]), None);
    assert_eq!(
        requests.message().await.expect_err("garbled").code(),
        Code::Internal
    );

    let compressed = vec![1, 0, 0, 0, 0];
    let mut requests = Requests::<DiscoveryRequest>::new(body(vec![compressed]), None);
    assert_eq!(
        requests.message().await.expect_err("compressed").code(),
        Code::Unimplemented
    );
}
