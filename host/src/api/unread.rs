//! A request answered before its body was read to the end — refused on its role, its route, its
//! method or its size — leaves unread bytes on the connection, and the HTTP server then drops that
//! connection. Said nothing, a client that pools connections (the casino platform's does) would send
//! its next request down the dropped one and see it fail. So such an answer says `Connection: close`.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::{HeaderValue, Version, header};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};

/// The middleware: watches the body of a request that announces one, and closes the connection
/// after the answer if the body was not read to its end.
pub async fn close_unread(request: Request, next: Next) -> Response {
    if request.version() > Version::HTTP_11 || !announces_body(&request) {
        return next.run(request).await;
    }
    let read = Arc::new(AtomicBool::new(false));
    let watched = read.clone();
    let request = request.map(|inner| Body::new(Watched { inner, read: watched }));
    let mut response = next.run(request).await;
    if !read.load(Ordering::Acquire) {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

fn announces_body(request: &Request) -> bool {
    let length = request.headers().get(header::CONTENT_LENGTH);
    request.headers().contains_key(header::TRANSFER_ENCODING) || length.is_some_and(|v| v.as_bytes() != b"0")
}

/// A request body that says when it has been read to its end.
struct Watched {
    inner: Body,
    read: Arc<AtomicBool>,
}

impl HttpBody for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.read.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
