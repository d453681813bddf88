//! Conversations, their context, the history API and priced models, through the real
//! handlers on DynamoDB Local.

mod common;

use std::collections::HashSet;

use common::*;
use lambda_http::{Body, Response};
use serde_json::{Value, json};
use shared::{ChatApp, domain::ConversationId, service::conversations::Conversations};
use testkit::{Behavior, GeminiStandIn};

/// `POST /api/chat/` with any body, through the chat function's router.
async fn chat_body(chat_app: &ChatApp, token: &str, body: Value) -> Response<Body> {
    let req = event("POST", "/api/chat/", Some(token), Some(&body.to_string()));
    chat_request(chat_app, req).await
}

/// Any request to the chat function.
async fn call(
    chat_app: &ChatApp,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Response<Body> {
    let body = body.map(|b| b.to_string());
    let req = event(method, path, Some(token), body.as_deref());
    chat_request(chat_app, req).await
}

fn answered(resp: &Response<Body>) -> Value {
    assert_eq!(resp.status(), 200, "{}", json_of(resp));
    json_of(resp)
}

#[tokio::test]
async fn a_conversation_carries_its_earlier_turns_as_context() {
    let standin = GeminiStandIn::with_behavior(Behavior::Answer).await;
    let app = app_with(|c| {
        c.conversations.system_instruction = Some("Answer in one sentence.".to_owned())
    })
    .await;
    let chat_app = chat_app_on(app, gemini_config(&standin));
    let token = user_token(&chat_app.app, "john").await;
    let first =
        answered(&chat_body(&chat_app, &token, json!({"message": "My name is John."})).await);
    let id = first["conversation_id"].as_str().unwrap().to_owned();
    assert_eq!(first["model"], "gemini-flash-latest");
    let second =
        answered(&chat_body(&chat_app, &token, json!({"message": "I live in Paris."})).await);
    assert_eq!(
        second["conversation_id"],
        id.as_str(),
        "a chat sent alone continues the latest conversation"
    );

    // What the third chat's model call is given: the first two turns, oldest first.
    let conversations = Conversations::new(&chat_app.app.store, &chat_app.app.config.conversations);
    let context = conversations
        .context(
            &account(&chat_app.app, "john").await,
            &ConversationId::parse(&id).unwrap(),
        )
        .await
        .unwrap();
    let messages: Vec<_> = context.iter().map(|t| t.message.as_str()).collect();
    assert_eq!(messages, ["My name is John.", "I live in Paris."]);
    assert_eq!(context[0].response, first["response"].as_str().unwrap());

    let third = answered(
        &chat_body(
            &chat_app,
            &token,
            json!({"message": "Where do I live?", "conversation_id": id}),
        )
        .await,
    );
    assert_eq!(third["conversation_id"], id.as_str());
    assert_eq!(third["tokens_remaining"], 3700);

    // And that is what Gemini received: both turns as user/model contents, then the
    // new message, with the system instruction.
    let (_, request) = standin.last_request().unwrap();
    let contents: Vec<(&str, &str)> = request["contents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["role"].as_str().unwrap(),
                c["parts"][0]["text"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        contents,
        [
            ("user", "My name is John."),
            ("model", first["response"].as_str().unwrap()),
            ("user", "I live in Paris."),
            ("model", second["response"].as_str().unwrap()),
            ("user", "Where do I live?"),
        ]
    );
    assert_eq!(
        request["systemInstruction"]["parts"][0]["text"],
        "Answer in one sentence."
    );
}

#[tokio::test]
async fn the_chosen_model_answers_and_its_price_is_charged() {
    let (standin, chat_app, token) = john_chatting(Behavior::Answer).await;
    let cheap = answered(
        &chat_body(
            &chat_app,
            &token,
            json!({"message": "hi", "model": "gemini-flash-lite-latest"}),
        )
        .await,
    );
    assert_eq!(cheap["model"], "gemini-flash-lite-latest");
    assert_eq!(
        standin.recorded().last().unwrap().model,
        "gemini-flash-lite-latest"
    );
    let price = chat_app
        .app
        .config
        .models
        .get("gemini-flash-lite-latest")
        .unwrap()
        .cost;
    assert_eq!(cheap["tokens_remaining"], 4000 - price);
}

#[tokio::test]
async fn null_starts_a_new_conversation_with_no_context() {
    let (_standin, chat_app, token) = john_chatting(Behavior::Answer).await;
    let first = answered(&chat_body(&chat_app, &token, json!({"message": "one"})).await);
    let fresh = answered(
        &chat_body(
            &chat_app,
            &token,
            json!({"message": "two", "conversation_id": null}),
        )
        .await,
    );
    assert_ne!(fresh["conversation_id"], first["conversation_id"]);
    let id = ConversationId::parse(fresh["conversation_id"].as_str().unwrap()).unwrap();
    let conversations = Conversations::new(&chat_app.app.store, &chat_app.app.config.conversations);
    // Its only turn is its own: the earlier conversation is not context.
    let context = conversations
        .context(&account(&chat_app.app, "john").await, &id)
        .await
        .unwrap();
    assert_eq!(context.len(), 1);
    assert_eq!(context[0].message, "two");
    // And the next chat sent alone continues the newest conversation.
    let next = answered(&chat_body(&chat_app, &token, json!({"message": "three"})).await);
    assert_eq!(next["conversation_id"], fresh["conversation_id"]);
}

#[tokio::test]
async fn an_idle_conversation_is_not_continued() {
    let standin = GeminiStandIn::start().await;
    let app = app_with(|c| c.conversations.idle_window = std::time::Duration::ZERO).await;
    let chat_app = chat_app_on(app, gemini_config(&standin));
    let token = user_token(&chat_app.app, "john").await;
    let first = answered(&chat_body(&chat_app, &token, json!({"message": "one"})).await);
    let second = answered(&chat_body(&chat_app, &token, json!({"message": "two"})).await);
    assert_ne!(first["conversation_id"], second["conversation_id"]);
}

#[tokio::test]
async fn the_context_budget_trims_the_oldest_turns() {
    let standin = GeminiStandIn::start().await;
    let app = app_with(|c| c.conversations.context_turns = 3).await;
    let chat_app = chat_app_on(app, gemini_config(&standin));
    let token = user_token(&chat_app.app, "john").await;
    let mut id = Value::Null;
    for i in 0..6 {
        let body = json!({"message": format!("turn {i}"), "conversation_id": id});
        id = answered(&chat_body(&chat_app, &token, body).await)["conversation_id"].clone();
    }
    let conversations = Conversations::new(&chat_app.app.store, &chat_app.app.config.conversations);
    let id = ConversationId::parse(id.as_str().unwrap()).unwrap();
    let context = conversations
        .context(&account(&chat_app.app, "john").await, &id)
        .await
        .unwrap();
    let kept: Vec<_> = context.iter().map(|t| t.message.as_str()).collect();
    assert_eq!(kept, ["turn 3", "turn 4", "turn 5"]);
}

#[tokio::test]
async fn refunded_turns_are_not_context() {
    let (standin, chat_app, token) = john_chatting(Behavior::Answer).await;
    let first = answered(&chat_body(&chat_app, &token, json!({"message": "kept"})).await);
    let id = first["conversation_id"].as_str().unwrap().to_owned();
    standin.set_behavior(Behavior::Status(503));
    let failed = chat_body(
        &chat_app,
        &token,
        json!({"message": "lost", "conversation_id": id}),
    )
    .await;
    assert_eq!(failed.status(), 503);
    let conversations = Conversations::new(&chat_app.app.store, &chat_app.app.config.conversations);
    let context = conversations
        .context(
            &account(&chat_app.app, "john").await,
            &ConversationId::parse(&id).unwrap(),
        )
        .await
        .unwrap();
    let kept: Vec<_> = context.iter().map(|t| t.message.as_str()).collect();
    assert_eq!(kept, ["kept"]);
}

#[tokio::test]
async fn someone_elses_or_an_unknown_conversation_is_404_and_costs_nothing() {
    let (standin, chat_app, token) = john_chatting(Behavior::Answer).await;
    let mary = user_token(&chat_app.app, "mary").await;
    let marys = answered(&chat_body(&chat_app, &mary, json!({"message": "mine"})).await);
    let calls = standin.requests();

    for id in [
        marys["conversation_id"].clone(),
        json!(ConversationId::new().as_str()),
    ] {
        let resp = chat_body(
            &chat_app,
            &token,
            json!({"message": "peek", "conversation_id": id}),
        )
        .await;
        assert_eq!(resp.status(), 404, "{}", json_of(&resp));
        assert_eq!(json_of(&resp)["code"], "not_found");
    }
    assert_eq!(balance(&chat_app.app, &token).await, 4000);
    assert_eq!(standin.requests(), calls, "Gemini was not asked");
    let books = assert_books_balance(&chat_app.app, "john").await;
    assert_eq!(
        (
            books.completed_chats,
            books.refunded_chats,
            books.open_charges
        ),
        (0, 0, 0)
    );

    // Nor can her history be read, renamed or deleted.
    let path = format!(
        "/api/conversations/{}/messages/",
        marys["conversation_id"].as_str().unwrap()
    );
    assert_eq!(
        call(&chat_app, "GET", &path, &token, None).await.status(),
        404
    );
    let path = format!(
        "/api/conversations/{}/",
        marys["conversation_id"].as_str().unwrap()
    );
    assert_eq!(
        call(&chat_app, "DELETE", &path, &token, None)
            .await
            .status(),
        404
    );
    let rename = Some(json!({"title": "mine now"}));
    assert_eq!(
        call(&chat_app, "PATCH", &path, &token, rename)
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn malformed_conversation_ids_and_models_are_400_before_any_charge() {
    let (standin, chat_app, token) = john_chatting(Behavior::Answer).await;
    for body in [
        json!({"message": "hi", "conversation_id": "not-a-uuid"}),
        json!({"message": "hi", "conversation_id": 7}),
        json!({"message": "hi", "model": "gpt-5"}),
        json!({"message": "hi", "model": 1}),
    ] {
        let resp = chat_body(&chat_app, &token, body.clone()).await;
        assert_eq!(resp.status(), 400, "{body}");
        assert_eq!(json_of(&resp)["code"], "invalid_field");
    }
    let resp = chat_body(
        &chat_app,
        &token,
        json!({"message": "hi", "model": "gpt-5"}),
    )
    .await;
    let detail = json_of(&resp)["detail"].as_str().unwrap().to_owned();
    assert!(
        detail.contains("gemini-flash-latest") && detail.contains("gemini-flash-lite-latest"),
        "the 400 names the allowed models: {detail}"
    );
    assert_eq!(standin.requests(), 0);
    assert_eq!(balance(&chat_app.app, &token).await, 4000);
}

#[tokio::test]
async fn each_model_is_charged_its_own_price() {
    let (_standin, chat_app, token) = john_chatting(Behavior::Answer).await;
    let lite = answered(
        &chat_body(
            &chat_app,
            &token,
            json!({"message": "cheap", "model": "gemini-flash-lite-latest"}),
        )
        .await,
    );
    assert_eq!(lite["tokens_remaining"], 3960);
    assert_eq!(lite["model"], "gemini-flash-lite-latest");
    let full = answered(&chat_body(&chat_app, &token, json!({"message": "dear"})).await);
    assert_eq!(full["tokens_remaining"], 3860);
    assert_eq!(full["model"], "gemini-flash-latest");
    let path = format!(
        "/api/conversations/{}/messages",
        full["conversation_id"].as_str().unwrap()
    );
    let page = json_of(&call(&chat_app, "GET", &path, &token, None).await);
    let costs: Vec<_> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["cost"].clone())
        .collect();
    assert_eq!(costs, [json!(40), json!(100)]);
    let books = assert_books_balance(&chat_app.app, "john").await;
    assert_eq!(books.settled, 140);
}

#[tokio::test]
async fn the_models_list_needs_no_login() {
    let app = app().await;
    for path in ["/api/models/", "/api/models"] {
        let resp = shared::api::tokens_function(&app, event("GET", path, None, None))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            json_of(&resp),
            json!({"models": [
                {"id": "gemini-flash-latest", "cost": 100, "default": true},
                {"id": "gemini-flash-lite-latest", "cost": 40, "default": false},
            ]})
        );
    }
    let resp = shared::api::tokens_function(&app, event("POST", "/api/models/", None, Some("{}")))
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
}

#[tokio::test]
async fn conversations_are_listed_most_recently_active_first_and_renamed() {
    let (_standin, chat_app, token) = john_chatting(Behavior::Answer).await;
    let a = answered(&chat_body(&chat_app, &token, json!({"message": "Plan a trip to Lisbon in the spring, with a day in Sintra and good food"})).await);
    let b = answered(
        &chat_body(
            &chat_app,
            &token,
            json!({"message": "Second", "conversation_id": null}),
        )
        .await,
    );
    // Back to the first: it becomes the most recent.
    answered(
        &chat_body(
            &chat_app,
            &token,
            json!({"message": "more", "conversation_id": a["conversation_id"]}),
        )
        .await,
    );

    let list = json_of(&call(&chat_app, "GET", "/api/conversations", &token, None).await);
    let listed = list["conversations"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["id"], a["conversation_id"]);
    assert_eq!(listed[1]["id"], b["conversation_id"]);
    assert_eq!(
        listed[0]["title"],
        "Plan a trip to Lisbon in the spring, with a day in Sintra…"
    );
    assert_eq!(listed[0]["messages"], 2);
    assert_eq!(listed[0]["model"], "gemini-flash-latest");
    assert!(listed[0]["updated_at"].as_u64() >= listed[0]["created_at"].as_u64());
    assert_eq!(list["next_cursor"], Value::Null);

    let path = format!(
        "/api/conversations/{}",
        b["conversation_id"].as_str().unwrap()
    );
    let renamed = call(
        &chat_app,
        "PATCH",
        &path,
        &token,
        Some(json!({"title": "  Renamed  "})),
    )
    .await;
    assert_eq!(renamed.status(), 200);
    assert_eq!(json_of(&renamed)["title"], "Renamed");
    for bad in [
        json!({"title": "   "}),
        json!({"title": "x".repeat(201)}),
        json!({}),
    ] {
        assert_eq!(
            call(&chat_app, "PATCH", &path, &token, Some(bad))
                .await
                .status(),
            400
        );
    }
    let wrong = call(&chat_app, "POST", &path, &token, None).await;
    assert_eq!(wrong.status(), 405);
    assert_eq!(header(&wrong, "allow"), Some("PATCH, DELETE"));
    assert_eq!(
        call(&chat_app, "GET", "/api/conversations/", "", None)
            .await
            .status(),
        401
    );
}

#[tokio::test]
async fn pagination_walks_250_messages_with_no_duplicates_or_gaps() {
    let standin = GeminiStandIn::start().await;
    let app = app_with(|c| c.start_tokens = 100_000).await;
    let chat_app = chat_app_on(app, gemini_config(&standin));
    let token = user_token(&chat_app.app, "john").await;
    let mut id = Value::Null;
    for i in 0..250 {
        let body = json!({"message": format!("m{i:03}"), "conversation_id": id});
        id = answered(&chat_body(&chat_app, &token, body).await)["conversation_id"].clone();
    }
    let base = format!("/api/conversations/{}/messages/", id.as_str().unwrap());
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            None => format!("{base}?limit=100"),
            Some(c) => format!("{base}?limit=100&cursor={c}"),
        };
        let page = json_of(&call(&chat_app, "GET", &path, &token, None).await);
        pages += 1;
        for m in page["messages"].as_array().unwrap() {
            seen.push(m["message"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        assert!(pages < 10, "pagination does not end");
    }
    let expected: Vec<_> = (0..250).map(|i| format!("m{i:03}")).collect();
    assert_eq!(seen, expected, "every message once, oldest first");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 250);

    // The default page is 20, the list of conversations pages too, and bad paging is 400.
    let page = json_of(&call(&chat_app, "GET", &base, &token, None).await);
    assert_eq!(page["messages"].as_array().unwrap().len(), 20);
    for bad in [
        "?limit=0",
        "?limit=101",
        "?limit=x",
        "?cursor=bm9wZQ",
        "?cursor=%21%21",
    ] {
        let resp = call(&chat_app, "GET", &format!("{base}{bad}"), &token, None).await;
        assert_eq!(resp.status(), 400, "{bad}: {}", json_of(&resp));
    }
    let resp = call(
        &chat_app,
        "GET",
        "/api/conversations/?cursor=bm9wZQ",
        &token,
        None,
    )
    .await;
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn the_list_of_conversations_pages_by_cursor() {
    let (_standin, chat_app, token) = john_chatting(Behavior::Answer).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let body = json!({"message": format!("c{i}"), "conversation_id": null});
        ids.push(answered(&chat_body(&chat_app, &token, body).await)["conversation_id"].clone());
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut path = "/api/conversations/?limit=2".to_owned();
    loop {
        let page = json_of(&call(&chat_app, "GET", &path, &token, None).await);
        seen.extend(
            page["conversations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["id"].clone()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/api/conversations/?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, ids, "newest first, each once");
}

#[tokio::test]
async fn deleting_a_conversation_removes_its_text_and_the_books_still_balance() {
    let (standin, chat_app, token) = john_chatting(Behavior::Answer).await;
    let first = answered(&chat_body(&chat_app, &token, json!({"message": "secret one"})).await);
    let id = first["conversation_id"].as_str().unwrap().to_owned();
    answered(&chat_body(&chat_app, &token, json!({"message": "secret two"})).await);
    standin.set_behavior(Behavior::Status(500));
    assert_eq!(
        chat_body(&chat_app, &token, json!({"message": "secret three"}))
            .await
            .status(),
        502
    );
    standin.set_behavior(Behavior::Answer);
    let other = answered(
        &chat_body(
            &chat_app,
            &token,
            json!({"message": "keep me", "conversation_id": null}),
        )
        .await,
    );

    let path = format!("/api/conversations/{id}/");
    let resp = call(&chat_app, "DELETE", &path, &token, None).await;
    assert_eq!(resp.status(), 204);
    assert_eq!(
        call(&chat_app, "DELETE", &path, &token, None)
            .await
            .status(),
        404
    );
    let messages = format!("/api/conversations/{id}/messages/");
    assert_eq!(
        call(&chat_app, "GET", &messages, &token, None)
            .await
            .status(),
        404
    );

    // The charges' records stay, without their text; the other conversation is whole.
    let chats = chat_app.app.store.chats("john").await.unwrap();
    let of_deleted: Vec<_> = chats.iter().filter(|c| c.conversation_id == id).collect();
    assert_eq!(of_deleted.len(), 3);
    assert!(
        of_deleted
            .iter()
            .all(|c| c.message.is_empty() && c.response.is_none())
    );
    assert!(of_deleted.iter().all(|c| c.cost == 100 && c.created_at > 0));
    let kept: Vec<_> = chats.iter().filter(|c| c.conversation_id != id).collect();
    assert_eq!(kept[0].message, "keep me");
    let books = assert_books_balance(&chat_app.app, "john").await;
    assert_eq!(
        (books.completed_chats, books.refunded_chats, books.settled),
        (3, 1, 300)
    );
    assert_eq!(balance(&chat_app.app, &token).await, 3700);

    let list = json_of(&call(&chat_app, "GET", "/api/conversations/", &token, None).await);
    let listed: Vec<_> = list["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].clone())
        .collect();
    assert_eq!(listed, [other["conversation_id"].clone()]);

    // A chat sent with the deleted id is 404, and one sent alone no longer continues it.
    let resp = chat_body(
        &chat_app,
        &token,
        json!({"message": "again", "conversation_id": id}),
    )
    .await;
    assert_eq!(resp.status(), 404);
    let alone = answered(&chat_body(&chat_app, &token, json!({"message": "alone"})).await);
    assert_ne!(alone["conversation_id"], id.as_str());
}

#[tokio::test]
async fn history_paths_work_with_and_without_the_trailing_slash() {
    let (_standin, chat_app, token) = john_chatting(Behavior::Answer).await;
    let a = answered(&chat_body(&chat_app, &token, json!({"message": "hi"})).await);
    let id = a["conversation_id"].as_str().unwrap();
    for path in [
        "/api/conversations".to_owned(),
        "/api/conversations/".to_owned(),
        format!("/api/conversations/{id}/messages"),
        format!("/api/conversations/{id}/messages/"),
    ] {
        assert_eq!(
            call(&chat_app, "GET", &path, &token, None).await.status(),
            200,
            "{path}"
        );
    }
    assert_eq!(
        call(&chat_app, "GET", "/api/conversations/x/y/z", &token, None)
            .await
            .status(),
        404
    );
    assert_eq!(
        call(
            &chat_app,
            "GET",
            "/api/conversations/nope/messages",
            &token,
            None
        )
        .await
        .status(),
        400
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_chats_into_one_conversation_are_all_counted_and_paid() {
    let (_standin, chat_app, token) = john_chatting(Behavior::Answer).await;
    let first = answered(&chat_body(&chat_app, &token, json!({"message": "start"})).await);
    let id = first["conversation_id"].clone();
    let chat_app = std::sync::Arc::new(chat_app);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let (chat_app, token, id) = (chat_app.clone(), token.clone(), id.clone());
        tasks.spawn(async move {
            let body = json!({"message": format!("at once {i}"), "conversation_id": id});
            chat_body(&chat_app, &token, body).await.status()
        });
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
    let list = json_of(&call(&chat_app, "GET", "/api/conversations/", &token, None).await);
    assert_eq!(list["conversations"][0]["messages"], 21);
    let path = format!(
        "/api/conversations/{}/messages/?limit=100",
        id.as_str().unwrap()
    );
    let page = json_of(&call(&chat_app, "GET", &path, &token, None).await);
    assert_eq!(page["messages"].as_array().unwrap().len(), 21);
    let books = assert_books_balance(&chat_app.app, "john").await;
    assert_eq!((books.completed_chats, books.balance), (21, 1900));
}

#[tokio::test]
async fn a_page_of_messages_is_full_even_when_refunded_chats_sit_between() {
    let (_standin, chat_app, token) = john_chatting(Behavior::Answer).await;
    let first = answered(&chat_body(&chat_app, &token, json!({"message": "one"})).await);
    let id = first["conversation_id"].as_str().unwrap().to_owned();
    for message in [
        "[standin:503] a",
        "[standin:503] b",
        "two",
        "[standin:500] c",
        "three",
    ] {
        chat_body(
            &chat_app,
            &token,
            json!({"message": message, "conversation_id": id}),
        )
        .await;
    }
    let page = call(
        &chat_app,
        "GET",
        &format!("/api/conversations/{id}/messages/?limit=2"),
        &token,
        None,
    )
    .await;
    let page = answered(&page);
    let messages: Vec<&str> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        messages,
        ["one", "two"],
        "refunded chats are skipped, the page still full"
    );
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest = call(
        &chat_app,
        "GET",
        &format!("/api/conversations/{id}/messages/?limit=2&cursor={cursor}"),
        &token,
        None,
    )
    .await;
    let rest = answered(&rest);
    assert_eq!(rest["messages"][0]["message"], "three");
    assert_eq!(rest["messages"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_reader_opening_a_conversation_gets_the_latest_messages_first_and_pages_back() {
    let standin = GeminiStandIn::start().await;
    let chat_app = chat_app(&standin).await;
    let token = user_token(&chat_app.app, "john").await;
    let mut id = Value::Null;
    for i in 0..5 {
        let body = json!({"message": format!("m{i}"), "conversation_id": id});
        id = answered(&chat_body(&chat_app, &token, body).await)["conversation_id"].clone();
    }
    let base = format!("/api/conversations/{}/messages/", id.as_str().unwrap());
    let texts = |page: &Value| -> Vec<String> {
        page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["message"].as_str().unwrap().to_owned())
            .collect()
    };
    let first = json_of(
        &call(
            &chat_app,
            "GET",
            &format!("{base}?order=newest&limit=2"),
            &token,
            None,
        )
        .await,
    );
    assert_eq!(texts(&first), ["m4", "m3"], "the latest first");
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let second = json_of(
        &call(
            &chat_app,
            "GET",
            &format!("{base}?order=newest&limit=2&cursor={cursor}"),
            &token,
            None,
        )
        .await,
    );
    assert_eq!(texts(&second), ["m2", "m1"], "then the ones before");
    let cursor2 = second["next_cursor"].as_str().unwrap().to_owned();
    let last = json_of(
        &call(
            &chat_app,
            "GET",
            &format!("{base}?order=newest&limit=2&cursor={cursor2}"),
            &token,
            None,
        )
        .await,
    );
    assert_eq!(texts(&last), ["m0"]);
    assert!(last["next_cursor"].is_null());

    // A cursor keeps its direction: a newest-first one is refused for oldest-first pages.
    let resp = call(
        &chat_app,
        "GET",
        &format!("{base}?limit=2&cursor={cursor}"),
        &token,
        None,
    )
    .await;
    assert_eq!(resp.status(), 400, "{}", json_of(&resp));
    assert_eq!(json_of(&resp)["field"], "cursor");
    let resp = call(
        &chat_app,
        "GET",
        &format!("{base}?order=sideways"),
        &token,
        None,
    )
    .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(json_of(&resp)["field"], "order");
    // The default is unchanged: oldest first.
    let page = json_of(&call(&chat_app, "GET", &format!("{base}?limit=2"), &token, None).await);
    assert_eq!(texts(&page), ["m0", "m1"]);
}
