//! The requests of one ADS stream, decoded from its HTTP/2 body.
//!
//! tonic's `Streaming` keeps its read buffer at the size of the largest request the stream
//! ever read: a sidecar's EDS request names every cluster (about 50 KB at 1000 services), so
//! each connected sidecar held that much for its whole life — the largest single part of
//! its memory. Here the buffer is given back once a large request has been decoded and
//! nothing follows it; requests that size are rare (a subscription change), the buffer is
//! regrown when one comes.

#[cfg(test)]
mod tests;

use std::marker::PhantomData;

use http_body_util::BodyExt;
use prost::bytes::{Buf, BytesMut};
use prost::Message;
use tonic::Status;

/// gRPC's length-prefixed message framing: a compression flag and a 4-byte length.
const PREFIX_LEN: usize = 5;
/// A buffer past this capacity is dropped once empty (tonic's initial buffer size).
const KEEP_CAPACITY: usize = 8 * 1024;
/// gRPC's default limit on a received message.
const DEFAULT_LIMIT: usize = 4 * 1024 * 1024;

/// Decoded requests of one stream (see the module docs).
pub struct Requests<M> {
    body: tonic::body::Body,
    buf: BytesMut,
    limit: usize,
    ended: bool,
    _message: PhantomData<fn() -> M>,
}

impl<M: Message + Default> Requests<M> {
    /// Requests read from `body`, each at most `limit` bytes (gRPC's 4 MiB if `None`).
    pub fn new(body: tonic::body::Body, limit: Option<usize>) -> Self {
        Requests {
            body,
            buf: BytesMut::new(),
            limit: limit.unwrap_or(DEFAULT_LIMIT),
            ended: false,
            _message: PhantomData,
        }
    }

    /// The next request; `None` once the client has closed its side of the stream.
    pub async fn message(&mut self) -> Result<Option<M>, Status> {
        loop {
            if let Some(message) = self.decode_buffered()? {
                return Ok(Some(message));
            }
            if self.ended {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(Status::internal(format!(
                        "the stream ended inside a request ({} bytes of it received)",
                        self.buf.len()
                    )))
                };
            }
            match self.body.frame().await {
                // Trailers carry nothing for a request stream.
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(status)) => return Err(status),
                None => self.ended = true,
            }
        }
    }

    /// Decodes one request if the buffer holds a whole one.
    fn decode_buffered(&mut self) -> Result<Option<M>, Status> {
        let Some(prefix) = self.buf.get(..PREFIX_LEN) else {
            return Ok(None);
        };
        if prefix[0] != 0 {
            return Err(Status::unimplemented(
                "compressed requests are not supported (no grpc-encoding was negotiated)",
            ));
        }
        let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
        if len > self.limit {
            return Err(Status::out_of_range(format!(
                "request of {len} bytes exceeds the limit of {} bytes",
                self.limit
            )));
        }
        if self.buf.len() < PREFIX_LEN + len {
            return Ok(None);
        }
        self.buf.advance(PREFIX_LEN);
        let encoded = self.buf.split_to(len);
        let message = M::decode(encoded)
            .map_err(|e| Status::internal(format!("request is not a valid message: {e}")))?;
        if self.buf.is_empty() && self.buf.capacity() > KEEP_CAPACITY {
            self.buf = BytesMut::new();
        }
        Ok(Some(message))
    }

    /// The read buffer's capacity (for tests of what a stream keeps).
    #[cfg(test)]
    fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }
}
