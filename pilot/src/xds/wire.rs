//! The wire form of xDS responses.
//!
//! Within a push every proxy with the same config key receives the same resources, often
//! hundreds of kilobytes of them. They are encoded once per push and the bytes are shared:
//! a stream encodes only its own version, nonce and removals, and hands the shared bytes to
//! HTTP/2 by reference. No stream copies or buffers a response of its own, so memory does
//! not grow with the number of connected proxies times the size of their config.
//!
//! Protobuf fields may appear in any order on the wire, so a [`WireResponse`] is the
//! response's own fields followed by pre-encoded `resources` entries (field 2 of both
//! `DiscoveryResponse` and `DeltaDiscoveryResponse`); every decoder reads it as the
//! plain message.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::iter::Peekable;
use std::pin::Pin;
use std::task::{Context, Poll};

use envoy_types::pb::envoy::service::discovery::v3::Resource as DeltaResource;
use http::HeaderMap;
use http_body::Frame;
use prost::bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tonic::Status;
use tracing::warn;

use super::gen::Resource;

/// `resources` in `DiscoveryResponse` and `DeltaDiscoveryResponse`.
const RESOURCES_FIELD: u32 = 2;

/// The gRPC message prefix: a compression flag and a big-endian length.
const GRPC_HEADER_LEN: usize = 5;

/// Parts at least this large go to HTTP/2 by reference; smaller ones (a delta response's
/// single resources, a response's own fields) are gathered into chunks of up to
/// [`CHUNK_LEN`] (HTTP/2's default frame size) as HTTP/2 asks for data: a response is a
/// few frames, not one per resource, and a stream's copies never exceed what its flow
/// control window lets through.
const BY_REFERENCE_LEN: usize = 16 * 1024;
const CHUNK_LEN: usize = 16 * 1024;

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

/// One resource as a delta stream sends it: its content version and its
/// `DeltaDiscoveryResponse.resources` entry.
#[derive(Debug, Clone)]
pub struct DeltaEntry {
    pub version: String,
    pub wire: Bytes,
}

impl DeltaEntry {
    pub fn new(resource: &Resource) -> Self {
        let version = content_version(&resource.body.value);
        let message = DeltaResource {
            name: resource.name.clone(),
            version: version.clone(),
            resource: Some(resource.body.clone()),
            ..Default::default()
        };
        let mut buf = BytesMut::with_capacity(prost::encoding::message::encoded_len(
            RESOURCES_FIELD,
            &message,
        ));
        prost::encoding::message::encode(RESOURCES_FIELD, &message, &mut buf);
        DeltaEntry {
            version,
            wire: buf.freeze(),
        }
    }
}

/// A resource version derived from its bytes, so unchanged resources are not resent.
pub fn content_version(bytes: &[u8]) -> String {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// An xDS response ready for the wire: the gRPC prefix and the response's own fields,
/// then shared `resources` entries.
#[derive(Debug, Clone)]
pub struct WireResponse {
    head: Bytes,
    resources: Vec<Bytes>,
}

impl WireResponse {
    /// `head` is the response without resources; `resources` are encoded entries of
    /// field 2. `None` if the message exceeds gRPC's 4 GiB length prefix.
    pub fn new<M: Message>(head: &M, resources: Vec<Bytes>) -> Option<Self> {
        let head_len = head.encoded_len();
        let total = head_len + resources.iter().map(Bytes::len).sum::<usize>();
        let mut buf = BytesMut::with_capacity(GRPC_HEADER_LEN + head_len);
        buf.put_u8(0);
        buf.put_u32(u32::try_from(total).ok()?);
        head.encode_raw(&mut buf);
        Some(WireResponse {
            head: buf.freeze(),
            resources: resources.into_iter().filter(|b| !b.is_empty()).collect(),
        })
    }

    /// The size of the message (without the gRPC prefix).
    pub fn encoded_len(&self) -> usize {
        self.head.len() - GRPC_HEADER_LEN + self.resources.iter().map(Bytes::len).sum::<usize>()
    }

    /// The plain message, as a client decodes it.
    pub fn decode<M: Message + Default>(&self) -> Result<M, prost::DecodeError> {
        let mut buf = Vec::with_capacity(self.encoded_len());
        buf.extend_from_slice(&self.head[GRPC_HEADER_LEN..]);
        for r in &self.resources {
            buf.extend_from_slice(r);
        }
        M::decode(buf.as_slice())
    }
}

/// The HTTP/2 response body of an ADS stream: each [`WireResponse`] from the stream's
/// task becomes body chunks, and the end of the task becomes the trailers (`grpc-status`
/// 0, or the task's error).
#[derive(Debug)]
pub struct ResponseBody {
    rx: mpsc::Receiver<Result<WireResponse, Status>>,
    /// The response being written: its head, then its parts in order.
    head: Option<Bytes>,
    parts: Peekable<std::vec::IntoIter<Bytes>>,
    done: bool,
    /// Released when HTTP/2 drops the body (see [`ResponseBody::holding`]).
    _held: Option<OwnedSemaphorePermit>,
}

impl ResponseBody {
    pub fn new(rx: mpsc::Receiver<Result<WireResponse, Status>>) -> Self {
        ResponseBody {
            rx,
            head: None,
            parts: Vec::new().into_iter().peekable(),
            done: false,
            _held: None,
        }
    }

    /// Keeps `permit` until the HTTP/2 stream is gone.
    pub fn holding(mut self, permit: OwnedSemaphorePermit) -> Self {
        self._held = Some(permit);
        self
    }

    /// The next body chunk: a large shared part as it is, or the small parts ahead
    /// gathered into one. Gathering happens here, when HTTP/2 asks for data, so a stream
    /// holds at most one gathered chunk of its own however large the response.
    fn next_chunk(&mut self) -> Option<Bytes> {
        let first = self.head.take().or_else(|| self.parts.next())?;
        let fits = |p: &Bytes, len: usize| p.len() < BY_REFERENCE_LEN && len + p.len() <= CHUNK_LEN;
        if first.len() >= BY_REFERENCE_LEN
            || !self.parts.peek().is_some_and(|p| fits(p, first.len()))
        {
            return Some(first);
        }
        let mut chunk = Vec::with_capacity(8);
        let mut len = first.len();
        chunk.push(first);
        while let Some(part) = self.parts.next_if(|p| fits(p, len)) {
            len += part.len();
            chunk.push(part);
        }
        Some(Bytes::from(chunk.concat()))
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

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        loop {
            if let Some(chunk) = self.next_chunk() {
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            if self.done {
                return Poll::Ready(None);
            }
            let status = match std::task::ready!(self.rx.poll_recv(cx)) {
                Some(Ok(response)) => {
                    self.head = Some(response.head);
                    self.parts = response.resources.into_iter().peekable();
                    continue;
                }
                Some(Err(status)) => status,
                None => Status::ok(""),
            };
            self.done = true;
            self.rx.close();
            return Poll::Ready(Some(Ok(Self::trailers(&status))));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.head.is_none() && self.parts.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::core::v3::ControlPlane;
    use envoy_types::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryResponse, DiscoveryResponse,
    };
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

    fn head(nonce: &str) -> DiscoveryResponse {
        DiscoveryResponse {
            version_info: "2026-11-28T00:00:00Z/7".into(),
            type_url: super::super::types::CLUSTER.into(),
            nonce: nonce.into(),
            control_plane: Some(ControlPlane {
                identifier: "istiod".into(),
            }),
            ..Default::default()
        }
    }

    fn response(nonce: &str, resources: &[Resource]) -> WireResponse {
        WireResponse::new(&head(nonce), vec![encode_resources(resources)]).expect("fits")
    }

    #[test]
    fn decodes_as_the_plain_response() {
        let resources = vec![cluster("a"), cluster("b"), cluster("outbound|80||c.ns")];
        let response = response("n-1", &resources);
        let plain = DiscoveryResponse {
            resources: resources.iter().map(|r| r.body.clone()).collect(),
            ..head("n-1")
        };
        assert_eq!(
            response.decode::<DiscoveryResponse>().expect("decodes"),
            plain
        );
        assert_eq!(response.encoded_len(), plain.encoded_len());
    }

    #[test]
    fn delta_entries_decode_as_delta_resources() {
        let resources = [cluster("a"), cluster("b")];
        let entries: Vec<DeltaEntry> = resources.iter().map(DeltaEntry::new).collect();
        let head = DeltaDiscoveryResponse {
            system_version_info: "v1".into(),
            type_url: super::super::types::CLUSTER.into(),
            removed_resources: vec!["gone".into()],
            nonce: "n-2".into(),
            ..Default::default()
        };
        let response = WireResponse::new(&head, entries.iter().map(|e| e.wire.clone()).collect())
            .expect("fits");
        let got = response
            .decode::<DeltaDiscoveryResponse>()
            .expect("decodes");
        assert_eq!(got.removed_resources, ["gone"]);
        assert_eq!(got.resources.len(), 2);
        for (r, (want, entry)) in got.resources.iter().zip(resources.iter().zip(&entries)) {
            assert_eq!(r.name, want.name);
            assert_eq!(r.version, entry.version);
            assert_eq!(r.resource.as_ref(), Some(&want.body));
        }
        assert_eq!(
            entries[0].version,
            content_version(&resources[0].body.value)
        );
        assert_ne!(entries[0].version, entries[1].version);
    }

    #[test]
    fn empty_resources_encode_nothing() {
        assert!(encode_resources(&[]).is_empty());
        let empty =
            WireResponse::new(&DiscoveryResponse::default(), vec![Bytes::new()]).expect("fits");
        assert_eq!(empty.encoded_len(), 0);
        assert_eq!(
            empty.decode::<DiscoveryResponse>().expect("decodes"),
            DiscoveryResponse::default()
        );
    }

    /// Reads a body to the end: the concatenated data and the trailers.
    async fn drain(body: ResponseBody) -> (Vec<u8>, HeaderMap) {
        let (chunks, trailers) = drain_chunks(body).await;
        (chunks.concat(), trailers)
    }

    /// Reads a body to the end: its data chunks and the trailers.
    async fn drain_chunks(mut body: ResponseBody) -> (Vec<Bytes>, HeaderMap) {
        let mut data = Vec::new();
        loop {
            let frame = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
            match frame.map(|f| f.expect("no body error").into_data()) {
                Some(Ok(chunk)) => data.push(chunk),
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
        let (data, trailers) = drain(ResponseBody::new(rx)).await;
        let got = messages(&data);
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0],
            first.decode::<DiscoveryResponse>().expect("decodes")
        );
        assert_eq!(
            got[1],
            second.decode::<DiscoveryResponse>().expect("decodes")
        );
        assert_eq!(trailers["grpc-status"], "0");
    }

    #[tokio::test]
    async fn body_ends_with_the_tasks_error() {
        let (tx, rx) = mpsc::channel(4);
        tx.send(Err(Status::invalid_argument("bad node id")))
            .await
            .expect("send");
        let (data, trailers) = drain(ResponseBody::new(rx)).await;
        assert!(data.is_empty());
        assert_eq!(trailers["grpc-status"], "3");
        assert_eq!(trailers["grpc-message"], "bad%20node%20id");
    }

    /// Polls the chunks of the first response.
    async fn chunks(mut body: ResponseBody, n: usize) -> Vec<Bytes> {
        let mut out = Vec::new();
        for _ in 0..n {
            let frame = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
            out.push(
                frame
                    .expect("frame")
                    .expect("ok")
                    .into_data()
                    .expect("data"),
            );
        }
        out
    }

    #[tokio::test]
    async fn shares_large_resource_bytes() {
        let (tx, rx) = mpsc::channel(1);
        let big: Vec<Resource> = (0..400)
            .map(|i| cluster(&format!("outbound|80||s{i}.ns")))
            .collect();
        let resources = encode_resources(&big);
        assert!(resources.len() >= BY_REFERENCE_LEN);
        let shared = WireResponse::new(&head("n-1"), vec![resources.clone()]).expect("fits");
        tx.send(Ok(shared)).await.expect("send");
        let got = chunks(ResponseBody::new(rx), 2).await;
        assert_eq!(got[1].as_ptr(), resources.as_ptr(), "sent by reference");
    }

    #[tokio::test]
    async fn gathers_small_parts_into_few_chunks() {
        let (tx, rx) = mpsc::channel(1);
        let entries: Vec<Bytes> = (0..2000)
            .map(|i| DeltaEntry::new(&cluster(&format!("outbound|80||s{i}.ns"))).wire)
            .collect();
        let total: usize = entries.iter().map(Bytes::len).sum();
        let response = WireResponse::new(&head("n-1"), entries).expect("fits");
        let want = response.decode::<DiscoveryResponse>().expect("decodes");
        tx.send(Ok(response)).await.expect("send");
        drop(tx);
        let (chunks, _) = drain_chunks(ResponseBody::new(rx)).await;
        assert!(
            chunks.len() <= total.div_ceil(CHUNK_LEN) + 1,
            "{} chunks for {total} bytes",
            chunks.len()
        );
        let data: Vec<u8> = chunks.concat();
        assert_eq!(messages(&data), [want]);
    }
}
