//! The wire form of state-of-the-world responses.
//!
//! Within a push every proxy with the same config key receives the same resources, often
//! hundreds of kilobytes of them. They are encoded once per push and the bytes are shared:
//! a stream encodes only its own version and nonce, and hands the shared bytes to HTTP/2
//! by reference. No stream copies or buffers a response of its own, so memory does not
//! grow with the number of connected proxies times the size of their config.
//!
//! Protobuf fields may appear in any order on the wire, so a [`SotwResponse`] is the
//! response's scalar fields followed by the pre-encoded `resources` (field 2) entries;
//! every decoder reads it as the same `DiscoveryResponse`.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use http::HeaderMap;
use http_body::Frame;
use prost::bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use tokio::sync::mpsc;
use tonic::Status;
use tracing::warn;

use super::generator::Resource;

/// `DiscoveryResponse.resources`.
const RESOURCES_FIELD: u32 = 2;

/// The gRPC message prefix: a compression flag and a big-endian length.
const GRPC_HEADER_LEN: usize = 5;

/// Encodes `resources` as the repeated `resources` field of a `DiscoveryResponse`.
pub fn encode_resources(resources: &[Resource]) -> Bytes {
    let len = resources
        .iter()
        .map(|r| prost::encoding::message::encoded_len(RESOURCES_FIELD, &r.body))
        .sum();
    let mut buf = BytesMut::with_capacity(len);
    for r in resources {
        prost::encoding::message::encode(RESOURCES_FIELD, &r.body, &mut buf);
    }
    buf.freeze()
}

/// A `DiscoveryResponse` whose resources are already encoded.
#[derive(Debug, Clone, Default)]
pub struct SotwResponse {
    /// Everything but `resources`.
    pub head: DiscoveryResponse,
    /// The `resources` entries, as from [`encode_resources`]; shared, not copied.
    pub resources: Bytes,
}

impl SotwResponse {
    /// The size of the encoded message.
    pub fn encoded_len(&self) -> usize {
        self.head.encoded_len() + self.resources.len()
    }

    /// The plain message, as a client decodes it.
    pub fn to_message(&self) -> Result<DiscoveryResponse, prost::DecodeError> {
        let mut buf = Vec::with_capacity(self.encoded_len());
        self.head.encode_raw(&mut buf);
        buf.put_slice(&self.resources);
        DiscoveryResponse::decode(buf.as_slice())
    }

    /// The gRPC message as body chunks: the prefix with the head, then the shared
    /// resources. `None` if the message exceeds gRPC's 4 GiB length prefix.
    fn into_chunks(self) -> Option<(Bytes, Bytes)> {
        let len = u32::try_from(self.encoded_len()).ok()?;
        let mut first = BytesMut::with_capacity(GRPC_HEADER_LEN + self.head.encoded_len());
        first.put_u8(0);
        first.put_u32(len);
        self.head.encode_raw(&mut first);
        Some((first.freeze(), self.resources))
    }
}

/// The HTTP/2 response body of a state-of-the-world stream: each [`SotwResponse`] from
/// the stream's task becomes gRPC message chunks, and the end of the task becomes the
/// trailers (`grpc-status` 0, or the task's error).
#[derive(Debug)]
pub struct SotwBody {
    rx: mpsc::Receiver<Result<SotwResponse, Status>>,
    pending: VecDeque<Bytes>,
    done: bool,
}

impl SotwBody {
    pub fn new(rx: mpsc::Receiver<Result<SotwResponse, Status>>) -> Self {
        SotwBody {
            rx,
            pending: VecDeque::with_capacity(2),
            done: false,
        }
    }

    fn trailers(status: &Status) -> Frame<Bytes> {
        let mut trailers = HeaderMap::new();
        if let Err(bad) = status.add_header(&mut trailers) {
            warn!(%bad, "status not representable as trailers");
            trailers = HeaderMap::new();
            let _ = Status::internal("invalid status").add_header(&mut trailers);
        }
        Frame::trailers(trailers)
    }
}

impl http_body::Body for SotwBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        loop {
            if let Some(chunk) = self.pending.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            if self.done {
                return Poll::Ready(None);
            }
            let status = match std::task::ready!(self.rx.poll_recv(cx)) {
                Some(Ok(response)) => match response.into_chunks() {
                    Some((first, resources)) => {
                        self.pending.push_back(first);
                        if !resources.is_empty() {
                            self.pending.push_back(resources);
                        }
                        continue;
                    }
                    None => Status::resource_exhausted("response exceeds 4 GiB"),
                },
                Some(Err(status)) => status,
                None => Status::ok(""),
            };
            self.done = true;
            self.rx.close();
            return Poll::Ready(Some(Ok(Self::trailers(&status))));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::core::v3::ControlPlane;
    use http_body::Body as _;

    use super::*;

    fn cluster(name: &str) -> Resource {
        Resource::new(
            name,
            &Cluster {
                name: name.to_owned(),
                ..Default::default()
            },
        )
    }

    fn response(nonce: &str, resources: &[Resource]) -> SotwResponse {
        SotwResponse {
            head: DiscoveryResponse {
                version_info: "2026-11-28T00:00:00Z/7".into(),
                type_url: super::super::types::CLUSTER.into(),
                nonce: nonce.into(),
                control_plane: Some(ControlPlane {
                    identifier: "istiod".into(),
                }),
                ..Default::default()
            },
            resources: encode_resources(resources),
        }
    }

    #[test]
    fn decodes_as_the_plain_response() {
        let resources = vec![cluster("a"), cluster("b"), cluster("outbound|80||c.ns")];
        let response = response("n-1", &resources);
        let plain = DiscoveryResponse {
            resources: resources.iter().map(|r| r.body.clone()).collect(),
            ..response.head.clone()
        };
        assert_eq!(response.to_message().expect("decodes"), plain);
        assert_eq!(response.encoded_len(), plain.encoded_len());
    }

    #[test]
    fn empty_resources_encode_nothing() {
        assert!(encode_resources(&[]).is_empty());
        assert_eq!(
            SotwResponse::default().to_message().expect("decodes"),
            DiscoveryResponse::default()
        );
    }

    /// Reads a body to the end: the concatenated data and the trailers.
    async fn drain(mut body: SotwBody) -> (Vec<u8>, HeaderMap) {
        let mut data = Vec::new();
        loop {
            let frame = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
            match frame.map(|f| f.expect("no body error").into_data()) {
                Some(Ok(chunk)) => data.extend_from_slice(&chunk),
                Some(Err(frame)) => {
                    assert!(body.is_end_stream());
                    return (data, frame.into_trailers().expect("trailers"));
                }
                None => panic!("body ended without trailers"),
            }
        }
    }

    /// Splits gRPC length-prefixed messages.
    fn messages(mut data: &[u8]) -> Vec<DiscoveryResponse> {
        let mut out = Vec::new();
        while !data.is_empty() {
            assert_eq!(data[0], 0, "uncompressed");
            let len = u32::from_be_bytes(data[1..5].try_into().expect("prefix")) as usize;
            out.push(DiscoveryResponse::decode(&data[5..5 + len]).expect("message"));
            data = &data[5 + len..];
        }
        out
    }

    #[tokio::test]
    async fn body_frames_messages_and_ends_with_ok() {
        let (tx, rx) = mpsc::channel(4);
        let first = response("n-1", &[cluster("a"), cluster("b")]);
        let second = response("n-2", &[]);
        tx.send(Ok(first.clone())).await.expect("send");
        tx.send(Ok(second.clone())).await.expect("send");
        drop(tx);
        let (data, trailers) = drain(SotwBody::new(rx)).await;
        let got = messages(&data);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], first.to_message().expect("decodes"));
        assert_eq!(got[1], second.to_message().expect("decodes"));
        assert_eq!(trailers["grpc-status"], "0");
    }

    #[tokio::test]
    async fn body_ends_with_the_tasks_error() {
        let (tx, rx) = mpsc::channel(4);
        tx.send(Err(Status::invalid_argument("bad node id")))
            .await
            .expect("send");
        let (data, trailers) = drain(SotwBody::new(rx)).await;
        assert!(data.is_empty());
        assert_eq!(trailers["grpc-status"], "3");
        assert_eq!(trailers["grpc-message"], "bad%20node%20id");
    }

    #[tokio::test]
    async fn shares_the_resource_bytes() {
        let (tx, rx) = mpsc::channel(1);
        let shared = response("n-1", &[cluster("a")]);
        let resources = shared.resources.clone();
        tx.send(Ok(shared)).await.expect("send");
        let mut body = SotwBody::new(rx);
        let mut chunks = Vec::new();
        for _ in 0..2 {
            let frame = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
            chunks.push(
                frame
                    .expect("frame")
                    .expect("ok")
                    .into_data()
                    .expect("data"),
            );
        }
        assert_eq!(chunks[1].as_ptr(), resources.as_ptr(), "sent by reference");
    }
}
