//! The Runtime API emulator against a function written here byte by byte: HTTP/1.1 on a
//! raw socket, so the wire format (chunks, the prelude's delimiter, trailers, a broken
//! connection) is exactly what the test says.

use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use testkit::runtime::{Functions, NotStreamed, Outcome, RuntimeApi, StreamEnd};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    sync::oneshot,
    time::timeout,
};

const WAIT: Duration = Duration::from_secs(10);

/// A function process reduced to its HTTP: takes the next invocation, answers it.
struct RawFunction {
    api: String,
}

impl RawFunction {
    fn new(runtime: &RuntimeApi) -> Self {
        Self {
            api: runtime.address(),
        }
    }

    /// `GET .../next`: the request id and the event.
    async fn next(&self) -> (String, Value) {
        let mut conn = BufReader::new(TcpStream::connect(&self.api).await.unwrap());
        conn.get_mut()
            .write_all(b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nhost: rt\r\n\r\n")
            .await
            .unwrap();
        let (status, headers) = read_head(&mut conn).await;
        assert_eq!(status, 200);
        let id = header(&headers, "lambda-runtime-aws-request-id").expect("a request id");
        let length: usize = header(&headers, "content-length").unwrap().parse().unwrap();
        let mut body = vec![0; length];
        conn.read_exact(&mut body).await.unwrap();
        (id, serde_json::from_slice(&body).unwrap())
    }

    /// A buffered answer, as `lambda_runtime::run` posts it.
    async fn answer(&self, id: &str, response: &Value) -> u16 {
        let body = response.to_string();
        let mut conn = BufReader::new(TcpStream::connect(&self.api).await.unwrap());
        let head = format!(
            "POST /2018-06-01/runtime/invocation/{id}/response HTTP/1.1\r\nhost: rt\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        conn.get_mut().write_all(head.as_bytes()).await.unwrap();
        read_head(&mut conn).await.0
    }

    /// `POST .../error` before any response.
    async fn fail(&self, id: &str, error: &Value) -> u16 {
        let body = error.to_string();
        let mut conn = BufReader::new(TcpStream::connect(&self.api).await.unwrap());
        let head = format!(
            "POST /2018-06-01/runtime/invocation/{id}/error HTTP/1.1\r\nhost: rt\r\n\
             content-length: {}\r\n\r\n{body}",
            body.len()
        );
        conn.get_mut().write_all(head.as_bytes()).await.unwrap();
        read_head(&mut conn).await.0
    }

    /// Starts a streamed answer, with the headers `run_with_streaming_response` sends.
    async fn stream(&self, id: &str) -> Streamed {
        let mut conn = TcpStream::connect(&self.api).await.unwrap();
        let head = format!(
            "POST /2018-06-01/runtime/invocation/{id}/response HTTP/1.1\r\nhost: rt\r\n\
             transfer-encoding: chunked\r\n\
             lambda-runtime-function-response-mode: streaming\r\n\
             trailer: Lambda-Runtime-Function-Error-Type\r\n\
             trailer: Lambda-Runtime-Function-Error-Body\r\n\
             content-type: application/vnd.awslambda.http-integration-response\r\n\r\n"
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        Streamed { conn }
    }
}

/// A streamed response being written: one HTTP chunk per call.
struct Streamed {
    conn: TcpStream,
}

impl Streamed {
    async fn chunk(&mut self, data: &[u8]) {
        let mut frame = format!("{:x}\r\n", data.len()).into_bytes();
        frame.extend_from_slice(data);
        frame.extend_from_slice(b"\r\n");
        self.conn.write_all(&frame).await.unwrap();
        self.conn.flush().await.unwrap();
    }

    async fn prelude(&mut self, prelude: &Value) {
        let mut bytes = prelude.to_string().into_bytes();
        bytes.extend_from_slice(&[0; 8]);
        self.chunk(&bytes).await;
    }

    /// Ends the body, with these trailers; returns the emulator's status.
    async fn finish(self, trailers: &[(&str, &str)]) -> u16 {
        let mut end = String::from("0\r\n");
        for (name, value) in trailers {
            end.push_str(&format!("{name}: {value}\r\n"));
        }
        end.push_str("\r\n");
        let mut conn = BufReader::new(self.conn);
        conn.get_mut().write_all(end.as_bytes()).await.unwrap();
        read_head(&mut conn).await.0
    }
}

async fn read_head(conn: &mut BufReader<TcpStream>) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    conn.read_line(&mut line).await.unwrap();
    let status = line
        .split(' ')
        .nth(1)
        .expect("a status line")
        .parse()
        .unwrap();
    let mut headers = Vec::new();
    loop {
        line.clear();
        conn.read_line(&mut line).await.unwrap();
        let Some((name, value)) = line.trim_end().split_once(':') else {
            break;
        };
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    (status, headers)
}

fn header(headers: &[(String, String)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[tokio::test]
async fn a_buffered_answer_comes_back_from_invoke() {
    let runtime = RuntimeApi::start().await;
    let function = RawFunction::new(&runtime);
    let invoked = runtime.invoke(json!({"path": "/api/tokens/"}));
    let answered = async {
        let (id, event) = function.next().await;
        assert_eq!(event["path"], "/api/tokens/");
        let resp = json!({"statusCode": 200, "body": "{\"tokens\":4000}"});
        assert_eq!(function.answer(&id, &resp).await, 202);
    };
    let (outcome, ()) = timeout(WAIT, async { tokio::join!(invoked, answered) })
        .await
        .unwrap();
    assert_eq!(outcome.http(), (200, json!({"tokens": 4000})));
}

#[tokio::test]
async fn invoke_collects_a_streamed_answer_into_a_proxy_response() {
    let runtime = RuntimeApi::start().await;
    let function = RawFunction::new(&runtime);
    let invoked = runtime.invoke(json!({}));
    let answered = async {
        let (id, _) = function.next().await;
        let mut stream = function.stream(&id).await;
        // The prelude split across chunks, and body bytes in the delimiter's chunk.
        let prelude = json!({
            "statusCode": 201,
            "headers": {"content-type": "application/json", "x-tokens-remaining": "3900"},
            "multiValueHeaders": {"set-cookie": ["a=1", "b=2"]},
            "cookies": ["c=3"],
        })
        .to_string();
        let (first, second) = prelude.split_at(10);
        stream.chunk(first.as_bytes()).await;
        let mut rest = second.as_bytes().to_vec();
        rest.extend_from_slice(&[0; 8]);
        rest.extend_from_slice(b"{\"answer\":");
        stream.chunk(&rest).await;
        stream.chunk(b" \"Paris\"}").await;
        stream.finish(&[]).await
    };
    let (outcome, status) = timeout(WAIT, async { tokio::join!(invoked, answered) })
        .await
        .unwrap();
    assert_eq!(status, 202);
    assert_eq!(outcome.http(), (201, json!({"answer": "Paris"})));
    let Outcome::Response(resp) = outcome else {
        unreachable!()
    };
    assert_eq!(resp["headers"]["x-tokens-remaining"], "3900");
    assert_eq!(
        resp["multiValueHeaders"]["set-cookie"],
        json!(["a=1", "b=2"])
    );
    assert_eq!(resp["cookies"], json!(["c=3"]));
    assert!(resp.get("streamError").is_none());
}

#[tokio::test]
async fn chunks_reach_the_client_while_the_function_is_still_writing() {
    let runtime = RuntimeApi::start().await;
    let function = RawFunction::new(&runtime);
    let mut invocation = runtime.invoke_streaming(json!({}));
    let (first_seen_tx, first_seen) = oneshot::channel::<()>();
    let writer = async {
        let (id, _) = function.next().await;
        let mut stream = function.stream(&id).await;
        stream
            .prelude(&json!({"statusCode": 200, "headers": {"content-type": "text/event-stream"}}))
            .await;
        stream.chunk(b"data: one\n\n").await;
        // The second chunk waits until the client has the first: no buffering in between.
        first_seen.await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        stream.chunk(b"data: two\n\n").await;
        stream.finish(&[]).await
    };
    let reader = async {
        let prelude = invocation.prelude().await.unwrap().clone();
        assert_eq!(prelude.status, 200);
        assert_eq!(prelude.headers["content-type"], "text/event-stream");
        let one = invocation.next_chunk().await.unwrap();
        assert_eq!(&one.bytes[..], b"data: one\n\n");
        first_seen_tx.send(()).unwrap();
        let two = invocation.next_chunk().await.unwrap();
        assert_eq!(&two.bytes[..], b"data: two\n\n");
        assert!(two.at.duration_since(one.at) >= Duration::from_millis(100));
        assert!(invocation.next_chunk().await.is_none());
        invocation.end().await
    };
    let (status, end) = timeout(WAIT, async { tokio::join!(writer, reader) })
        .await
        .unwrap();
    assert_eq!(status, 202);
    assert_eq!(end, StreamEnd::Completed);
}

#[tokio::test]
async fn error_trailers_end_the_stream_as_failed() {
    let runtime = RuntimeApi::start().await;
    let function = RawFunction::new(&runtime);
    let mut invocation = runtime.invoke_streaming(json!({}));
    let id = invocation.request_id().to_owned();
    let writer = async {
        let (id, _) = function.next().await;
        let mut stream = function.stream(&id).await;
        stream.prelude(&json!({"statusCode": 200})).await;
        stream.chunk(b"partial").await;
        let body = b64("upstream went away");
        stream
            .finish(&[
                ("Lambda-Runtime-Function-Error-Type", "Runtime.StreamError"),
                ("Lambda-Runtime-Function-Error-Body", &body),
            ])
            .await
    };
    let (status, end) = timeout(WAIT, async { tokio::join!(writer, invocation.end()) })
        .await
        .unwrap();
    assert_eq!(status, 202);
    let failed = StreamEnd::Failed {
        error_type: "Runtime.StreamError".into(),
        error_body: "upstream went away".into(),
        in_band: false,
    };
    assert_eq!(end, failed);
    let record = timeout(WAIT, runtime.stream_record(&id)).await.unwrap();
    assert_eq!((record.body_bytes, record.end), (7, failed));
}

#[tokio::test]
async fn lambda_runtimes_in_band_error_lines_end_the_stream_as_failed() {
    let runtime = RuntimeApi::start().await;
    let function = RawFunction::new(&runtime);
    let invoked = runtime.invoke(json!({}));
    let writer = async {
        let (id, _) = function.next().await;
        let mut stream = function.stream(&id).await;
        stream.prelude(&json!({"statusCode": 200})).await;
        stream.chunk(b"Paris is").await;
        // What lambda_runtime 1.5 writes for a stream item that is an error.
        let lines = format!(
            "Lambda-Runtime-Function-Error-Type: Runtime.StreamError\r\n\
             Lambda-Runtime-Function-Error-Body: {}\r\n",
            b64("model stream broke")
        );
        stream.chunk(lines.as_bytes()).await;
        stream.finish(&[]).await
    };
    let (outcome, _) = timeout(WAIT, async { tokio::join!(invoked, writer) })
        .await
        .unwrap();
    let Outcome::Response(resp) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(resp["body"], "Paris is");
    assert_eq!(
        resp["streamError"],
        json!({"errorType": "Runtime.StreamError", "errorMessage": "model stream broke"})
    );
}

#[tokio::test]
async fn a_client_that_leaves_does_not_stop_the_function() {
    let runtime = RuntimeApi::start().await;
    let function = RawFunction::new(&runtime);
    let mut invocation = runtime.invoke_streaming(json!({}));
    let id = invocation.request_id().to_owned();
    let (left_tx, left) = oneshot::channel::<()>();
    let writer = async {
        let (id, _) = function.next().await;
        let mut stream = function.stream(&id).await;
        stream.prelude(&json!({"statusCode": 200})).await;
        stream.chunk(b"12345").await;
        left.await.unwrap();
        for _ in 0..3 {
            stream.chunk(b"abcdefghij").await;
        }
        stream.finish(&[]).await
    };
    let client = async {
        invocation.prelude().await.unwrap();
        assert_eq!(&invocation.next_chunk().await.unwrap().bytes[..], b"12345");
        invocation.disconnect();
        left_tx.send(()).unwrap();
    };
    let (status, ()) = timeout(WAIT, async { tokio::join!(writer, client) })
        .await
        .unwrap();
    // The function's post went through to the end and was accepted.
    assert_eq!(status, 202);
    let record = timeout(WAIT, runtime.stream_record(&id)).await.unwrap();
    assert_eq!(record.status, Some(200));
    assert_eq!(record.body_bytes, 35);
    assert_eq!(record.chunks, 4);
    assert_eq!(record.client_left_after, Some(5));
    assert_eq!(record.end, StreamEnd::Completed);
}

#[tokio::test]
async fn a_function_that_dies_mid_stream_leaves_a_broken_stream() {
    let runtime = RuntimeApi::start().await;
    let function = RawFunction::new(&runtime);
    let invoked = runtime.invoke(json!({}));
    let writer = async {
        let (id, _) = function.next().await;
        let mut stream = function.stream(&id).await;
        stream.prelude(&json!({"statusCode": 200})).await;
        stream.chunk(b"half an ans").await;
        drop(stream); // The connection closes inside the chunked body.
    };
    let (outcome, ()) = timeout(WAIT, async { tokio::join!(invoked, writer) })
        .await
        .unwrap();
    let Outcome::Response(resp) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(resp["body"], "half an ans");
    assert_eq!(resp["streamError"]["errorType"], "Emulator.BrokenStream");
}

#[tokio::test]
async fn a_stream_without_a_prelude_delimiter_is_refused() {
    let runtime = RuntimeApi::start().await;
    let function = RawFunction::new(&runtime);
    let mut invocation = runtime.invoke_streaming(json!({}));
    let writer = async {
        let (id, _) = function.next().await;
        let mut stream = function.stream(&id).await;
        // A buffered handler's body under the streaming entry point: no prelude at all.
        for _ in 0..20 {
            stream.chunk(&[b'x'; 1024]).await;
        }
        stream.finish(&[]).await
    };
    let (status, prelude) = timeout(WAIT, async {
        tokio::join!(writer, async { invocation.prelude().await.cloned() })
    })
    .await
    .unwrap();
    assert_eq!(status, 202);
    assert!(
        matches!(prelude, Err(NotStreamed::Ended(StreamEnd::BadPrelude(_)))),
        "{prelude:?}"
    );
}

#[tokio::test]
async fn an_error_before_streaming_is_an_answer_not_a_stream() {
    let runtime = RuntimeApi::start().await;
    let function = RawFunction::new(&runtime);
    let mut invocation = runtime.invoke_streaming(json!({}));
    let error = json!({"errorType": "Runtime.Panic", "errorMessage": "boom"});
    let writer = async {
        let (id, _) = function.next().await;
        function.fail(&id, &error).await
    };
    let (status, prelude) = timeout(WAIT, async {
        tokio::join!(writer, async { invocation.prelude().await.cloned() })
    })
    .await
    .unwrap();
    assert_eq!(status, 202);
    assert_eq!(
        prelude,
        Err(NotStreamed::Answered(Outcome::Error(error.clone())))
    );
    assert!(invocation.next_chunk().await.is_none());
}

/// A REST proxy event for the streaming example, at `path`.
fn event(path: &str) -> Value {
    let mut event: Value = serde_json::from_str(include_str!("../../events/tokens.json")).unwrap();
    event["path"] = path.into();
    event
}

#[tokio::test]
async fn the_real_runtime_streams_its_chunks_through_the_emulator() {
    let runtime = RuntimeApi::start().await;
    let _function = Functions::spawn(
        env!("CARGO_BIN_EXE_streaming-example").as_ref(),
        &runtime,
        1,
        &[],
    );
    let mut invocation = runtime.invoke_streaming(event("/stream"));
    let run = async {
        let prelude = invocation.prelude().await.unwrap().clone();
        let mut chunks = Vec::new();
        while let Some(chunk) = invocation.next_chunk().await {
            chunks.push(chunk);
        }
        (prelude, chunks, invocation.end().await)
    };
    let (prelude, chunks, end) = timeout(Duration::from_secs(30), run).await.unwrap();
    assert_eq!(prelude.status, 200);
    assert_eq!(prelude.headers["content-type"], "text/plain");
    let text: Vec<&[u8]> = chunks.iter().map(|c| &c.bytes[..]).collect();
    assert_eq!(text, [&b"one "[..], b"two ", b"three"]);
    // Written 50 ms apart, and not held back until the end. (The first two may arrive
    // close together: the runtime's post starts while the second is being written.)
    assert!(chunks[2].at.duration_since(chunks[1].at) >= Duration::from_millis(30));
    assert_eq!(end, StreamEnd::Completed);
}

#[tokio::test]
async fn the_real_runtime_reports_a_body_error_after_the_chunks() {
    let runtime = RuntimeApi::start().await;
    let _function = Functions::spawn(
        env!("CARGO_BIN_EXE_streaming-example").as_ref(),
        &runtime,
        1,
        &[],
    );
    let outcome = timeout(
        Duration::from_secs(30),
        runtime.invoke(event("/stream/fail")),
    )
    .await
    .unwrap();
    let Outcome::Response(resp) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(resp["statusCode"], 200);
    assert_eq!(resp["body"], "one two three");
    assert_eq!(resp["streamError"]["errorType"], "Runtime.StreamError");
    assert_eq!(
        resp["streamError"]["errorMessage"],
        "the model stream broke"
    );
}
