//! A JSON API that calls an allowed outbound service: `GET /repo-api-rust/OWNER/REPO` asks
//! GitHub about the repository and answers a short summary of it.
//!
//! The outgoing request is ordinary `wasi:http`: eddy checks it against the function's
//! `allow_outbound` list, and while the function waits for GitHub its instance holds no
//! thread and is not billed for CPU.

use serde::{Deserialize, Serialize};
use serde_json::json;
use wstd::http::{Body, Client, Method, Request, Response, StatusCode};

/// The part of GitHub's repository object this API passes on.
#[derive(Deserialize, Serialize)]
struct Repository {
    full_name: String,
    description: Option<String>,
    stargazers_count: u64,
    forks_count: u64,
    open_issues_count: u64,
    language: Option<String>,
    html_url: String,
}

#[wstd::http_server]
async fn main(request: Request<Body>) -> wstd::http::Result<Response<Body>> {
    if request.method() != Method::GET {
        let mut response = reply(StatusCode::METHOD_NOT_ALLOWED, json!({"error": "only GET"}));
        response.headers_mut().insert("allow", "GET".parse()?);
        return Ok(response);
    }
    let segments: Vec<&str> = request
        .uri()
        .path()
        .split('/')
        .filter(|segment| !segment.is_empty())
        .collect();
    let [_route, owner, repo] = segments[..] else {
        return Ok(usage());
    };
    if !valid_name(owner) || !valid_name(repo) {
        return Ok(usage());
    }
    Ok(match fetch(owner, repo).await {
        Ok(answer) => answer,
        Err(err) => reply(
            StatusCode::BAD_GATEWAY,
            json!({"error": format!("cannot reach GitHub: {err:#}")}),
        ),
    })
}

/// Asks GitHub for the repository and turns its answer into this API's.
async fn fetch(owner: &str, repo: &str) -> wstd::http::Result<Response<Body>> {
    let api = std::env::var("GITHUB_API").unwrap_or_else(|_| "https://api.github.com".into());
    let mut request = Request::get(format!("{api}/repos/{owner}/{repo}"))
        .header("accept", "application/vnd.github+json")
        .header("user-agent", "eddy-example-repo-api");
    if let Ok(token) = std::env::var("GITHUB_TOKEN")
        && !token.is_empty()
    {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let mut upstream = Client::new().send(request.body(Body::empty())?).await?;
    Ok(match upstream.status() {
        StatusCode::OK => match upstream.body_mut().json::<Repository>().await {
            Ok(found) => reply(
                StatusCode::OK,
                json!({
                    "repo": found.full_name,
                    "description": found.description,
                    "stars": found.stargazers_count,
                    "forks": found.forks_count,
                    "open_issues": found.open_issues_count,
                    "language": found.language,
                    "url": found.html_url,
                }),
            ),
            Err(_) => reply(
                StatusCode::BAD_GATEWAY,
                json!({"error": "GitHub's answer was not a repository"}),
            ),
        },
        StatusCode::NOT_FOUND => reply(
            StatusCode::NOT_FOUND,
            json!({"error": format!("no such repository: {owner}/{repo}")}),
        ),
        status => reply(
            StatusCode::BAD_GATEWAY,
            json!({"error": format!("GitHub answered {}", status.as_u16())}),
        ),
    })
}

/// GitHub's owner and repository names: letters, digits, `.`, `_` and `-`. Checking them
/// also keeps anything else out of the URL the function builds.
fn valid_name(name: &str) -> bool {
    (1..=100).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn usage() -> Response<Body> {
    reply(
        StatusCode::BAD_REQUEST,
        json!({"error": "expected GET /repo-api-rust/OWNER/REPO"}),
    )
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    response
}
