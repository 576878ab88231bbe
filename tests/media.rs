//! Recording files as a browser receives them: only audio and video inline,
//! everything else a `nosniff` attachment under a CSP that allows nothing;
//! long names cut to fit the file system before the upload; `Range` as
//! RFC 9110 has it.

mod support;

use onair::protocol::Role;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use support::harness::{ADMIN_KEY, RECV_TIMEOUT, Server, http};

/// Hands in `bytes` as the multipart `file` named `name`.
async fn hand_in(server: &Server, id: &str, name: &str, bytes: Vec<u8>) -> reqwest::Response {
    let form = Form::new()
        .text("recording_id", id.to_owned())
        .part("file", Part::bytes(bytes).file_name(name.to_owned()));
    http()
        .post(server.url("/v1/rooms/room/recordings"))
        .bearer_auth(ADMIN_KEY)
        .multipart(form)
        .send()
        .await
        .unwrap()
}

async fn get(server: &Server, path: &str, range: Option<&str>) -> reqwest::Response {
    let client = reqwest::Client::builder()
        .timeout(RECV_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut request = client.get(server.url(path)).bearer_auth(ADMIN_KEY);
    if let Some(range) = range {
        request = request.header("range", range);
    }
    request.send().await.unwrap()
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} on {response:?}"))
        .to_str()
        .unwrap()
}

/// What every answer of a media route carries, whatever its status.
fn assert_locked_down(response: &reqwest::Response) {
    assert_eq!(header(response, "x-content-type-options"), "nosniff");
    assert_eq!(
        header(response, "content-security-policy"),
        "default-src 'none'"
    );
}

fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[tokio::test]
async fn only_audio_and_video_are_served_inline_and_every_media_answer_is_locked_down() {
    let server = Server::start().await;
    let page = b"<html><script>alert(document.cookie)</script></html>".to_vec();
    assert_eq!(
        hand_in(&server, "page", "rec.html", page.clone())
            .await
            .status(),
        201
    );
    for id in ["page", "svg"] {
        if id == "svg" {
            let svg = b"<svg xmlns='http://www.w3.org/2000/svg'><script>1</script></svg>";
            assert_eq!(
                hand_in(&server, id, "a.svg", svg.to_vec()).await.status(),
                201
            );
        }
        let response = get(&server, &format!("/v1/recordings/{id}/media"), None).await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            header(&response, "content-type"),
            "application/octet-stream"
        );
        assert!(
            header(&response, "content-disposition").starts_with("attachment;"),
            "{response:?}"
        );
        assert_locked_down(&response);
    }

    // The same through a signed link, whole and in part.
    let signed: Value = get(&server, "/v1/recordings/page/url", None)
        .await
        .json()
        .await
        .unwrap();
    let url = signed["url"].as_str().unwrap();
    let response = http().get(server.url(url)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "content-type"),
        "application/octet-stream"
    );
    assert!(header(&response, "content-disposition").starts_with("attachment;"));
    assert_locked_down(&response);
    assert_eq!(response.bytes().await.unwrap().to_vec(), page);
    let response = http()
        .get(server.url(url))
        .header("range", "bytes=0-5")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 206);
    assert_eq!(
        header(&response, "content-type"),
        "application/octet-stream"
    );
    assert_locked_down(&response);

    // Audio and video are what they are, inline.
    for (id, name, media_type) in [
        ("video", "talk.webm", "video/webm"),
        ("mp4", "standup.MP4", "video/mp4"),
        ("audio", "talk.opus", "audio/opus"),
    ] {
        assert_eq!(hand_in(&server, id, name, content(100)).await.status(), 201);
        let response = get(&server, &format!("/v1/recordings/{id}/media"), None).await;
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "content-type"), media_type);
        let disposition = header(&response, "content-disposition");
        assert!(disposition.starts_with("inline;"), "{disposition}");
        assert!(disposition.contains(name), "{disposition}");
        assert_locked_down(&response);
    }

    // Errors, refusals, a 416 and a redirect on the media routes alike.
    let response = get(&server, "/v1/recordings/nothing/media", None).await;
    assert_eq!(response.status(), 404);
    assert_locked_down(&response);
    // An unknown id is named, briefly.
    let unknown = "z".repeat(2000);
    let response = get(&server, &format!("/v1/recordings/{unknown}/media"), None).await;
    assert_eq!(response.status(), 404);
    assert_locked_down(&response);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "recording_not_found");
    assert!(
        !body["message"].as_str().unwrap().contains(&"z".repeat(17)),
        "{body}"
    );
    let response = http()
        .get(server.url("/v1/recordings/page/media?expires=1&signature=00"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_locked_down(&response);
    let response = get(&server, "/v1/recordings/video/media", Some("bytes=100-")).await;
    assert_eq!(response.status(), 416);
    assert_locked_down(&response);
    let response = http()
        .post(server.url("/v1/rooms/room/recordings"))
        .bearer_auth(ADMIN_KEY)
        .json(
            &json!({"recording_id": "far", "url": "https://files.example/x.mp4", "name": "x.mp4"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let response = get(&server, "/v1/recordings/far/media", None).await;
    assert_eq!(response.status(), 307);
    assert_eq!(header(&response, "location"), "https://files.example/x.mp4");
    assert_locked_down(&response);
    let response = get(&server, "/v1/recordings/far/url", None).await;
    assert_eq!(response.status(), 200);
    assert_locked_down(&response);
}

#[tokio::test]
async fn a_long_multi_byte_name_is_accepted_and_cut_to_fit() {
    let server = Server::start().await;
    let (mut ada, _) = server.join("room", "Ada", Role::Moderator).await;
    // 200 characters of 3 bytes each: 604 bytes, more than any file system takes.
    let long = format!("{}.mp4", "録".repeat(200));
    let bytes = content(10_000);
    let response = hand_in(&server, "long", &long, bytes.clone()).await;
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
    let created: Value = response.json().await.unwrap();
    let name = created["name"].as_str().unwrap();
    assert!(name.len() <= 255, "{} bytes", name.len());
    assert!(name.ends_with(".mp4"), "{name}");
    assert!(long.starts_with(name.trim_end_matches(".mp4")), "{name}");
    assert!(name.chars().count() > 80, "{name}");
    let available = ada.expect("recording", "recording_available").await;
    assert_eq!(available["name"], name);

    let response = get(&server, "/v1/recordings/long/media", None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-type"), "video/mp4");
    let disposition = header(&response, "content-disposition");
    assert!(disposition.starts_with("inline;"), "{disposition}");
    assert!(
        disposition.contains("filename*=UTF-8''%E9%8C%B2"),
        "{disposition}"
    );
    assert_eq!(response.bytes().await.unwrap().to_vec(), bytes);

    // A `name` field, and the JSON form, are cut the same way.
    let form = Form::new()
        .text("recording_id", "named")
        .text("name", format!("{}.webm", "ü".repeat(300)))
        .part("file", Part::bytes(content(10)).file_name("x.webm"));
    let response = http()
        .post(server.url("/v1/rooms/room/recordings"))
        .bearer_auth(ADMIN_KEY)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    let name = created["name"].as_str().unwrap();
    assert!(name.len() <= 255 && name.ends_with(".webm"), "{name}");
    let response = http()
        .post(server.url("/v1/rooms/room/recordings"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"url": "https://files.example/y.mp4", "name": format!("{}.mp4", "名".repeat(150))}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    let name = created["name"].as_str().unwrap();
    assert!(name.len() <= 255 && name.ends_with(".mp4"), "{name}");
}

#[tokio::test]
async fn ranges_follow_rfc_9110() {
    let server = Server::start().await;
    let bytes = content(1000);
    assert_eq!(
        hand_in(&server, "r", "r.webm", bytes.clone())
            .await
            .status(),
        201
    );
    let media = "/v1/recordings/r/media";

    // Partial content, cut to the end of the file.
    for (range, first, last) in [
        ("bytes=0-9", 0, 9),
        ("bytes=990-5000", 990, 999),
        ("bytes=-10", 990, 999),
        // A suffix longer than the file is the whole file, as a range.
        ("bytes=-5000", 0, 999),
        ("bytes=500-", 500, 999),
        // Of several ranges, the only one that overlaps.
        ("bytes=0-1,2000-3000", 0, 1),
    ] {
        let response = get(&server, media, Some(range)).await;
        assert_eq!(response.status(), 206, "{range}");
        assert_eq!(
            header(&response, "content-range"),
            format!("bytes {first}-{last}/1000"),
            "{range}"
        );
        assert_eq!(
            response.bytes().await.unwrap().to_vec(),
            bytes[first..=last],
            "{range}"
        );
    }

    // Past the end: 416 with the size.
    for range in ["bytes=1000-", "bytes=5000-", "bytes=1000-2000", "bytes=-0"] {
        let response = get(&server, media, Some(range)).await;
        assert_eq!(response.status(), 416, "{range}");
        assert_eq!(
            header(&response, "content-range"),
            "bytes */1000",
            "{range}"
        );
    }

    // Several ranges, or a header that does not parse: the whole file.
    for range in [
        "bytes=0-1,5-6",
        "bytes=abc",
        "bytes=5-1",
        "bytes=-",
        "items=0-1",
        "bytes=+1-2",
    ] {
        let response = get(&server, media, Some(range)).await;
        assert_eq!(response.status(), 200, "{range}");
        assert!(response.headers().get("content-range").is_none(), "{range}");
        assert_eq!(response.bytes().await.unwrap().to_vec(), bytes, "{range}");
    }

    // An If-Range onair cannot match (it sends no validators): the whole file.
    let response = http()
        .get(server.url(media))
        .bearer_auth(ADMIN_KEY)
        .header("range", "bytes=0-9")
        .header("if-range", "\"some-etag\"")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap().to_vec(), bytes);
}
