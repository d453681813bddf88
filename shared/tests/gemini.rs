//! The Gemini client against the stand-in: what it sends, what it refuses to do, and
//! how buffered and streamed answers (and their failures) come back. No DynamoDB.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shared::{
    ApiError,
    config::{GeminiConfig, Secret},
    gemini::{
        BuildError, Error, GeminiClient, MAX_RETRY_DELAY, ModelName, Prompt, ReplyStream,
        StreamEvent, Turn,
    },
};
use testkit::{Behavior, GeminiStandIn, gemini::Pacing};

const KEY: &str = "test-gemini-key";

fn model(name: &str) -> ModelName {
    ModelName::parse(name).unwrap()
}

fn config(standin: &GeminiStandIn) -> GeminiConfig {
    GeminiConfig {
        timeout: Duration::from_secs(5),
        stream_timeout: Duration::from_secs(10),
        stream_idle_timeout: Duration::from_secs(5),
        ..GeminiConfig::new(
            Secret::new(KEY),
            standin.base_url(),
            GeminiConfig::default_model(),
        )
    }
}

fn client(standin: &GeminiStandIn) -> GeminiClient {
    GeminiClient::new(config(standin)).unwrap()
}

/// A stand-in whose streams come quickly, for tests about content rather than pace.
async fn quick_standin(behavior: Behavior) -> GeminiStandIn {
    let standin = GeminiStandIn::with_behavior(behavior).await;
    standin.set_pacing(Pacing {
        first_chunk: Duration::from_millis(5),
        interval: Duration::from_millis(5),
        words_per_chunk: 4,
    });
    standin
}

fn last_body(standin: &GeminiStandIn) -> Value {
    standin.last_request().expect("a request arrived").1
}

/// Reads a stream to its end: the deltas, then the final outcome.
async fn drain(mut stream: ReplyStream) -> (Vec<String>, Result<shared::gemini::Reply, Error>) {
    let mut deltas = Vec::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(StreamEvent::Text(t)) => deltas.push(t),
            Ok(StreamEvent::Done(reply)) => {
                assert!(stream.next().await.is_none(), "nothing follows Done");
                return (deltas, Ok(reply));
            }
            Err(e) => {
                assert!(stream.next().await.is_none(), "nothing follows an error");
                return (deltas, Err(e));
            }
        }
    }
    panic!("the stream ended with neither Done nor an error");
}

async fn stream_outcome(behavior: Behavior) -> (Vec<String>, Result<shared::gemini::Reply, Error>) {
    let standin = quick_standin(behavior).await;
    let gemini = client(&standin);
    let m = GeminiConfig::default_model();
    let stream = gemini.stream(&Prompt::new(&m, "hello")).await.unwrap();
    drain(stream).await
}

// ---- what is sent ----

#[tokio::test]
async fn history_goes_first_as_alternating_user_and_model_turns() {
    let standin = GeminiStandIn::start().await;
    let gemini = client(&standin);
    let history = [
        Turn {
            message: "My name is Ada.".into(),
            response: "Hello Ada!".into(),
        },
        Turn {
            message: "I like maths.".into(),
            response: "Maths is lovely.".into(),
        },
    ];
    let m = model("gemini-2.5-flash");
    let prompt = Prompt {
        history: &history,
        ..Prompt::new(&m, "What is my name?")
    };
    let reply = gemini.generate(&prompt).await.unwrap();
    assert!(reply.text.contains("What is my name?"), "{}", reply.text);
    let body = last_body(&standin);
    let text = |role: &str, text: &str| json!({"role": role, "parts": [{"text": text}]});
    assert_eq!(
        body["contents"],
        json!([
            text("user", "My name is Ada."),
            text("model", "Hello Ada!"),
            text("user", "I like maths."),
            text("model", "Maths is lovely."),
            text("user", "What is my name?"),
        ])
    );
    assert!(body.get("systemInstruction").is_none());
    assert_eq!(standin.recorded()[0].model, "gemini-2.5-flash");
}

#[tokio::test]
async fn a_system_instruction_is_sent_when_given() {
    let standin = GeminiStandIn::start().await;
    let gemini = client(&standin);
    let m = GeminiConfig::default_model();
    let prompt = Prompt {
        system_instruction: Some("Answer in French."),
        ..Prompt::new(&m, "Hi")
    };
    gemini.generate(&prompt).await.unwrap();
    assert_eq!(
        last_body(&standin)["systemInstruction"],
        json!({"parts": [{"text": "Answer in French."}]})
    );
}

#[tokio::test]
async fn directives_in_old_turns_are_ignored() {
    let standin = GeminiStandIn::start().await;
    let gemini = client(&standin);
    let history = [Turn {
        message: "[standin:503]".into(),
        response: "ok".into(),
    }];
    let m = GeminiConfig::default_model();
    let prompt = Prompt {
        history: &history,
        ..Prompt::new(&m, "and now?")
    };
    assert!(gemini.generate(&prompt).await.is_ok());
    assert_eq!(standin.requests(), 1);
}

#[tokio::test]
async fn every_request_caps_output_and_thinking_for_its_model_family() {
    let standin = quick_standin(Behavior::Answer).await;
    let gemini = GeminiClient::new(GeminiConfig {
        max_output_tokens: 777,
        thinking_budget: 333,
        thinking_level: "medium".parse().unwrap(),
        ..config(&standin)
    })
    .unwrap();
    let cases = [
        ("gemini-2.5-flash", Some(json!({"thinkingBudget": 333}))),
        (
            "gemini-3-pro-preview",
            Some(json!({"thinkingLevel": "medium"})),
        ),
        ("gemini-flash-latest", Some(json!({"thinkingBudget": 333}))),
        ("gemini-2.0-flash", None),
    ];
    for (name, thinking) in cases {
        let m = model(name);
        for streamed in [false, true] {
            if streamed {
                let stream = gemini.stream(&Prompt::new(&m, "hi")).await.unwrap();
                drain(stream).await.1.unwrap();
            } else {
                gemini.generate(&Prompt::new(&m, "hi")).await.unwrap();
            }
            let recorded = standin.recorded().pop().unwrap();
            assert_eq!(recorded.model, name);
            let config = &recorded.body["generationConfig"];
            assert_eq!(config["maxOutputTokens"], 777, "{name}");
            assert_eq!(config.get("thinkingConfig"), thinking.as_ref(), "{name}");
        }
    }
}

// ---- what is refused ----

#[tokio::test]
async fn a_redirect_is_never_followed_and_the_key_never_leaves() {
    for status in [301, 302, 307, 308] {
        let standin = quick_standin(Behavior::Redirect(status)).await;
        let gemini = client(&standin);
        let m = GeminiConfig::default_model();
        let err = gemini.generate(&Prompt::new(&m, "hi")).await.unwrap_err();
        assert!(
            matches!(err, Error::Api { status: s, .. } if s == status),
            "{err:?}"
        );
        let err = gemini.stream(&Prompt::new(&m, "hi")).await.unwrap_err();
        assert!(matches!(err, Error::Api { status: s, .. } if s == status));
        assert_eq!(ApiError::from(err).code(), "model_error");
        assert_eq!(standin.requests(), 2, "asked once each, no retries");
        assert!(
            standin.redirect_hits().is_empty(),
            "the other host heard from us: {:?}",
            standin.redirect_hits()
        );
    }
}

#[tokio::test]
async fn plain_http_is_refused_unless_the_host_is_loopback() {
    let build = |url: &str| {
        GeminiClient::new(GeminiConfig::new(
            Secret::new(KEY),
            url,
            GeminiConfig::default_model(),
        ))
    };
    for refused in [
        "http://generativelanguage.googleapis.com",
        "http://10.0.0.1:8080",
        "http://127.0.0.1.example.com",
        "http://localhost.evil.com",
        "ftp://127.0.0.1",
        "https://user:pw@generativelanguage.googleapis.com",
        "https://generativelanguage.googleapis.com/?key=x",
        "not a url",
    ] {
        let err = build(refused).unwrap_err();
        assert!(matches!(err, BuildError::BaseUrl(_)), "{refused}: {err:?}");
        assert!(err.to_string().starts_with("GEMINI_BASE_URL"), "{err}");
    }
    for allowed in [
        "https://generativelanguage.googleapis.com",
        "https://generativelanguage.googleapis.com/",
        "http://127.0.0.1:8090",
        "http://127.9.9.9:8090",
        "http://localhost:8090",
        "http://[::1]:8090",
    ] {
        assert!(build(allowed).is_ok(), "{allowed} was refused");
    }
}

#[tokio::test]
async fn absurd_retry_delays_never_panic_and_give_a_sane_retry_after() {
    let cases = [
        (json!("1e400s"), None),
        (json!("-5s"), None),
        (json!("abc"), None),
        (json!("NaNs"), None),
        (json!(12), None),
        (json!(1e308), None),
        (json!({"seconds": 5}), None),
        (json!("1000000000000000s"), Some(MAX_RETRY_DELAY)),
        (
            json!(format!("{}s", "9".repeat(400))),
            Some(MAX_RETRY_DELAY),
        ),
        (json!("4.5s"), Some(Duration::from_millis(4500))),
    ];
    for (delay, expected) in cases {
        let standin = quick_standin(Behavior::RateLimitedRaw(delay.clone())).await;
        let gemini = GeminiClient::new(GeminiConfig {
            max_retries: 1,
            ..config(&standin)
        })
        .unwrap();
        let m = GeminiConfig::default_model();
        let err = gemini.generate(&Prompt::new(&m, "hi")).await.unwrap_err();
        assert!(err.is_overloaded(), "{delay}: {err:?}");
        assert_eq!(err.retry_after(), expected, "{delay}");
        let err = gemini.stream(&Prompt::new(&m, "hi")).await.unwrap_err();
        assert_eq!(err.retry_after(), expected, "{delay}");
        let api = ApiError::from(err);
        assert_eq!(api.status().as_u16(), 503);
        let retry_after: u64 = api
            .headers()
            .into_iter()
            .find(|(name, _)| *name == "retry-after")
            .expect("a Retry-After header")
            .1
            .parse()
            .expect("whole seconds");
        assert!((1..=60).contains(&retry_after), "{delay}: {retry_after}");
    }
}

#[tokio::test]
async fn a_short_retry_delay_is_waited_out_and_the_retry_answers() {
    let standin = quick_standin(Behavior::Answer).await;
    standin.script([Behavior::RateLimitedRaw(json!("0.3s"))]);
    let gemini = client(&standin);
    let m = GeminiConfig::default_model();
    let started = Instant::now();
    let stream = gemini.stream(&Prompt::new(&m, "hi")).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(drain(stream).await.1.is_ok());
    assert_eq!(standin.requests(), 2);
}

#[test]
fn bad_model_names_are_refused_before_any_request_can_be_made() {
    for bad in [
        "gemini-2.5-flash:streamGenerateContent",
        "../gemini",
        "gemini-x/../../files",
        "gemini-x?alt=json",
        "gemini-x#frag",
        "gemini-2.5 flash",
        "gemini-..",
        "GEMINI-2.5-FLASH",
        "claude-3",
    ] {
        assert!(ModelName::parse(bad).is_err(), "{bad:?} was accepted");
    }
}

/// The only test in this binary that touches the environment.
#[test]
fn configuration_is_checked_at_cold_start_naming_the_variable() {
    let vars = [
        "GEMINI_BASE_URL",
        "GEMINI_MODEL",
        "GEMINI_MAX_OUTPUT_TOKENS",
        "GEMINI_THINKING_BUDGET",
        "GEMINI_THINKING_LEVEL",
        "GEMINI_STREAM_IDLE_TIMEOUT_MS",
        "GEMINI_STREAM_TIMEOUT_MS",
    ];
    let set = |pairs: &[(&str, &str)]| {
        for var in vars {
            // SAFETY: no other test in this binary reads or writes the environment.
            unsafe { std::env::remove_var(var) };
        }
        for (var, value) in pairs {
            unsafe { std::env::set_var(var, value) };
        }
        GeminiConfig::from_env(Secret::new(KEY))
    };
    let defaults = set(&[]).unwrap();
    assert_eq!(defaults.model.as_str(), "gemini-flash-latest");
    assert_eq!(defaults.max_output_tokens, 4096);
    assert_eq!(defaults.thinking_budget, 1024);
    assert_eq!(defaults.stream_idle_timeout, Duration::from_secs(20));

    let ok = set(&[
        ("GEMINI_MODEL", "gemini-2.5-pro"),
        ("GEMINI_MAX_OUTPUT_TOKENS", "512"),
        ("GEMINI_THINKING_BUDGET", "0"),
        ("GEMINI_THINKING_LEVEL", "HIGH"),
        ("GEMINI_STREAM_IDLE_TIMEOUT_MS", "1500"),
    ])
    .unwrap();
    assert_eq!(ok.model.as_str(), "gemini-2.5-pro");
    assert_eq!(ok.max_output_tokens, 512);
    assert_eq!(ok.stream_idle_timeout, Duration::from_millis(1500));

    // (GEMINI_BASE_URL is checked where the client is built, in the same cold start:
    // see the test of refused base URLs above.)
    for (var, value) in [
        ("GEMINI_MODEL", "gemini-2.5-flash:generateContent?x="),
        ("GEMINI_MAX_OUTPUT_TOKENS", "0"),
        ("GEMINI_MAX_OUTPUT_TOKENS", "many"),
        ("GEMINI_THINKING_BUDGET", "100000"),
        ("GEMINI_THINKING_BUDGET", "5000"),
        ("GEMINI_THINKING_LEVEL", "extreme"),
        ("GEMINI_STREAM_IDLE_TIMEOUT_MS", "0"),
        ("GEMINI_STREAM_TIMEOUT_MS", "-1"),
    ] {
        let err = set(&[(var, value)]).unwrap_err();
        assert_eq!(err.var, var, "{value}");
        assert!(err.to_string().contains(var), "{err}");
    }
    set(&[]).unwrap();
}

// ---- streaming ----

#[tokio::test]
async fn deltas_arrive_in_order_while_the_answer_is_still_being_written() {
    let standin = GeminiStandIn::with_behavior(Behavior::LongAnswer { words: 60 }).await;
    standin.set_pacing(Pacing {
        first_chunk: Duration::from_millis(50),
        interval: Duration::from_millis(30),
        words_per_chunk: 4,
    });
    let gemini = client(&standin);
    let m = model("gemini-2.5-flash");
    let mut stream = gemini
        .stream(&Prompt::new(&m, "tell me a story"))
        .await
        .unwrap();
    let Some(Ok(StreamEvent::Text(first))) = stream.next().await else {
        panic!("the first event is text");
    };
    let first_received = Instant::now();
    let (mut deltas, outcome) = drain(stream).await;
    deltas.insert(0, first);
    let reply = outcome.unwrap();

    let recorded = standin.recorded().pop().unwrap();
    assert_eq!(recorded.method, "streamGenerateContent");
    assert!(recorded.chunks_written.len() > 10);
    assert_eq!(deltas.len(), recorded.chunks_written.len());
    assert!(
        first_received < *recorded.chunks_written.last().unwrap(),
        "the first delta came only after the whole answer was written"
    );
    assert!(!recorded.client_gone);

    assert!(deltas.iter().all(|d| !d.is_empty()));
    assert_eq!(reply.text, deltas.concat());
    assert!(reply.text.starts_with("[canned answer"));
    assert!(reply.text.split_whitespace().count() >= 60);
    assert_eq!(reply.finish_reason.as_deref(), Some("STOP"));
    assert_eq!(reply.model, "gemini-2.5-flash");
    // Final cumulative totals, as the last chunk gave them.
    let words = reply.text.chars().count().div_ceil(4) as u64;
    assert_eq!(reply.usage.response_tokens, words);
    assert!(reply.usage.prompt_tokens > 0);
    assert_eq!(
        reply.usage.total_tokens,
        reply.usage.prompt_tokens + reply.usage.response_tokens
    );
}

#[tokio::test]
async fn a_streamed_answer_equals_the_buffered_one() {
    let standin = quick_standin(Behavior::Answer).await;
    let gemini = client(&standin);
    let m = GeminiConfig::default_model();
    let prompt = Prompt::new(&m, "same question");
    let buffered = gemini.generate(&prompt).await.unwrap();
    let (_, streamed) = drain(gemini.stream(&prompt).await.unwrap()).await;
    assert_eq!(streamed.unwrap(), buffered);
}

#[tokio::test]
async fn a_prompt_blocked_in_the_first_chunk_is_an_error_with_no_text() {
    let (deltas, outcome) = stream_outcome(Behavior::PromptBlocked).await;
    assert!(deltas.is_empty());
    let err = outcome.unwrap_err();
    assert!(matches!(err, Error::PromptBlocked(_)), "{err:?}");
    assert_eq!(ApiError::from(err).code(), "content_blocked");
}

#[tokio::test]
async fn a_safety_stop_mid_stream_ends_the_stream_with_its_reason() {
    let (deltas, outcome) = stream_outcome(Behavior::StopAfter(3, "SAFETY")).await;
    assert_eq!(deltas.len(), 3);
    let err = outcome.unwrap_err();
    assert!(
        matches!(&err, Error::AnswerBlocked(r) if r == "SAFETY"),
        "{err:?}"
    );
    assert_eq!(ApiError::from(err).code(), "content_blocked");
}

#[tokio::test]
async fn a_connection_dropped_mid_stream_is_its_own_error() {
    let (deltas, outcome) = stream_outcome(Behavior::DropAfter(2)).await;
    assert_eq!(deltas.len(), 2);
    let err = outcome.unwrap_err();
    assert!(matches!(err, Error::Disconnected(_)), "{err:?}");
    assert_eq!(ApiError::from(err).code(), "model_error");
}

#[tokio::test]
async fn a_malformed_chunk_is_an_error() {
    let (deltas, outcome) = stream_outcome(Behavior::Malformed).await;
    assert!(deltas.is_empty());
    assert!(matches!(outcome, Err(Error::Malformed(_))), "{outcome:?}");
}

#[tokio::test]
async fn a_stream_that_ends_without_a_finish_reason_is_incomplete() {
    let (deltas, outcome) = stream_outcome(Behavior::TruncateAfter(2)).await;
    assert_eq!(deltas.len(), 2);
    assert!(matches!(outcome, Err(Error::Incomplete)), "{outcome:?}");
}

#[tokio::test]
async fn a_stream_with_no_candidates_is_not_an_answer() {
    let (deltas, outcome) = stream_outcome(Behavior::NoCandidates).await;
    assert!(deltas.is_empty());
    assert!(outcome.is_err(), "{outcome:?}");
}

#[tokio::test]
async fn a_stalled_stream_hits_the_idle_timeout_and_the_standin_sees_us_leave() {
    let standin = quick_standin(Behavior::StallAfter(2)).await;
    let gemini = GeminiClient::new(GeminiConfig {
        stream_idle_timeout: Duration::from_millis(300),
        ..config(&standin)
    })
    .unwrap();
    let m = GeminiConfig::default_model();
    let started = Instant::now();
    let stream = gemini.stream(&Prompt::new(&m, "hi")).await.unwrap();
    let (deltas, outcome) = drain(stream).await;
    assert_eq!(deltas.len(), 2);
    let err = outcome.unwrap_err();
    assert!(
        matches!(err, Error::Idle(d) if d == Duration::from_millis(300)),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(ApiError::from(err).code(), "model_timeout");
    wait_for(|| standin.recorded()[0].client_gone).await;
}

#[tokio::test]
async fn the_whole_stream_deadline_ends_an_answer_that_keeps_trickling() {
    let standin = GeminiStandIn::with_behavior(Behavior::LongAnswer { words: 400 }).await;
    standin.set_pacing(Pacing {
        first_chunk: Duration::ZERO,
        interval: Duration::from_millis(40),
        words_per_chunk: 2,
    });
    let gemini = GeminiClient::new(GeminiConfig {
        stream_timeout: Duration::from_millis(500),
        stream_idle_timeout: Duration::from_millis(200),
        ..config(&standin)
    })
    .unwrap();
    let m = GeminiConfig::default_model();
    let stream = gemini.stream(&Prompt::new(&m, "hi")).await.unwrap();
    let (deltas, outcome) = drain(stream).await;
    assert!(deltas.len() > 3, "chunks kept coming before the deadline");
    assert!(
        matches!(outcome, Err(Error::Timeout(d)) if d == Duration::from_millis(500)),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_reader_that_stops_early_is_seen_to_go_away() {
    let standin = GeminiStandIn::with_behavior(Behavior::LongAnswer { words: 200 }).await;
    standin.set_pacing(Pacing {
        first_chunk: Duration::ZERO,
        interval: Duration::from_millis(20),
        words_per_chunk: 2,
    });
    let gemini = client(&standin);
    let m = GeminiConfig::default_model();
    let mut stream = gemini.stream(&Prompt::new(&m, "hi")).await.unwrap();
    assert!(matches!(
        stream.next().await,
        Some(Ok(StreamEvent::Text(_)))
    ));
    drop(stream);
    wait_for(|| standin.recorded()[0].client_gone).await;
    assert!(!standin.recorded()[0].stream_completed);
}

#[tokio::test]
async fn failures_before_the_body_are_the_error_of_stream_itself() {
    for (behavior, code) in [
        (Behavior::Status(400), "model_error"),
        (Behavior::Status(403), "model_error"),
        (Behavior::Status(404), "model_error"),
        (Behavior::Status(500), "model_error"),
        (Behavior::Status(504), "model_timeout"),
        (Behavior::Status(503), "model_unavailable"),
        (Behavior::Status(429), "model_unavailable"),
    ] {
        let standin = quick_standin(behavior.clone()).await;
        let gemini = client(&standin);
        let m = GeminiConfig::default_model();
        let err = gemini.stream(&Prompt::new(&m, "hi")).await.unwrap_err();
        assert_eq!(ApiError::from(err).code(), code, "{behavior:?}");
        let expected = if code == "model_unavailable" { 3 } else { 1 };
        assert_eq!(standin.requests(), expected, "{behavior:?}: retries");
    }

    // Overload, then an answer: the retry streams it.
    let standin = quick_standin(Behavior::Answer).await;
    standin.script([Behavior::Status(503), Behavior::Status(429)]);
    let gemini = client(&standin);
    let m = GeminiConfig::default_model();
    let (_, outcome) = drain(gemini.stream(&Prompt::new(&m, "hi")).await.unwrap()).await;
    assert!(outcome.is_ok());
    assert_eq!(standin.requests(), 3);

    // No headers at all: the deadline.
    let standin = quick_standin(Behavior::Hang).await;
    let gemini = GeminiClient::new(GeminiConfig {
        stream_timeout: Duration::from_millis(300),
        ..config(&standin)
    })
    .unwrap();
    let err = gemini.stream(&Prompt::new(&m, "hi")).await.unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err:?}");

    // Nobody listening.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let gemini = GeminiClient::new(GeminiConfig::new(
        Secret::new(KEY),
        format!("http://127.0.0.1:{port}"),
        GeminiConfig::default_model(),
    ))
    .unwrap();
    let err = gemini.stream(&Prompt::new(&m, "hi")).await.unwrap_err();
    assert!(matches!(err, Error::Transport(_)), "{err:?}");
}

#[tokio::test]
async fn a_buffered_answer_cut_mid_body_is_a_transport_failure() {
    let standin = quick_standin(Behavior::DropAfter(1)).await;
    let gemini = client(&standin);
    let m = GeminiConfig::default_model();
    let err = gemini.generate(&Prompt::new(&m, "hi")).await.unwrap_err();
    assert!(matches!(err, Error::Transport(_)), "{err:?}");
    assert_eq!(ApiError::from(err).code(), "model_error");
}

async fn wait_for(condition: impl Fn() -> bool) {
    let until = Instant::now() + Duration::from_secs(3);
    while !condition() {
        assert!(Instant::now() < until, "the condition never held");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
