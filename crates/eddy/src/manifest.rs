//! `eddy.toml` for `eddy deploy`: reads the file and resolves its paths against the
//! manifest's directory. Parsing and checking it is `eddy_parse::manifest`.

use std::path::Path;

use anyhow::{Result, anyhow};

use crate::build::BuildSpec;
use crate::deploy::DeployTarget;

/// The manifest `eddy deploy` reads when given neither NAME FILE nor `-f`.
pub const DEFAULT_PATH: &str = "eddy.toml";

/// What a manifest asks for, checked: the queues to create and the functions to deploy.
#[derive(Debug)]
pub struct Manifest {
    /// In name order.
    pub queues: Vec<crate::api::CreateQueue>,
    /// In name order.
    pub functions: Vec<DeployTarget>,
}

/// Reads the manifest at `path`: its queues, and its functions as deploy requests with
/// component paths resolved against the manifest's directory.
pub fn load(path: &Path) -> Result<Manifest> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        anyhow!(
            "cannot read manifest {}: {err} — pass NAME FILE to deploy one component, or -f FILE to name the manifest",
            path.display()
        )
    })?;
    let dir = path.parent().unwrap_or(Path::new(""));
    parse(&text, dir).map_err(|problem| anyhow!("{}: {problem}", path.display()))
}

/// Parses manifest text; relative component paths are taken from `dir`.
fn parse(text: &str, dir: &Path) -> Result<Manifest, String> {
    let manifest = eddy_parse::manifest::parse(text)?;
    let functions = manifest
        .functions
        .into_iter()
        .map(|function| DeployTarget {
            component: dir.join(function.component),
            name: function.name,
            config: function.config,
            build: function.build.map(|build| BuildSpec {
                lang: build.lang,
                source: dir.join(build.source),
            }),
            consume: function.consume,
        })
        .collect();
    Ok(Manifest {
        queues: manifest.queues,
        functions,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use eddy_parse::manifest::FORMAT_HINT;

    use super::*;
    use crate::api::{
        ConsumerRequest, CreateQueue, DeployRequest, Missed, Overlap, ScheduleSettings,
    };
    use crate::build::Lang;
    use crate::deploy::Consume;

    const EXAMPLE: &str = r#"
        [functions.hello]
        component = "target/guests/hello-rust.wasm"
        route = "/hello"
        memory = "64MiB"
        timeout = "2s"
        allow_outbound = ["api.example.com"]
        max_concurrency = 5
        max_wait = "500ms"
        reuse_idle_timeout = "30s"
        [functions.hello.env]
        GREETING = "Hi"

        [functions.api]
        component = "/abs/api.wasm"
    "#;

    #[test]
    fn functions_come_in_name_order_with_paths_from_the_manifest_dir() {
        let requests = parse(EXAMPLE, Path::new("/project")).unwrap().functions;
        assert_eq!(
            requests,
            [
                DeployTarget {
                    name: "api".into(),
                    component: "/abs/api.wasm".into(),
                    config: DeployRequest::default(),
                    build: None,
                    consume: None,
                },
                DeployTarget {
                    name: "hello".into(),
                    component: "/project/target/guests/hello-rust.wasm".into(),
                    config: DeployRequest {
                        route: Some("/hello".into()),
                        memory_bytes_max: Some(64 << 20),
                        timeout_ms: Some(2000),
                        env: BTreeMap::from([("GREETING".into(), "Hi".into())]),
                        allow_outbound: vec!["api.example.com".into()],
                        max_concurrency: Some(5),
                        max_wait_ms: Some(500),
                        reuse_idle_timeout_ms: Some(30_000),
                        ..DeployRequest::default()
                    },
                    build: None,
                    consume: None,
                },
            ]
        );
    }

    #[test]
    fn a_function_with_a_lang_is_built_from_its_source() {
        let requests = parse(
            "[functions.a]\nlang = \"python\"\n\
             [functions.b]\nlang = \"js\"\nsource = \"b\"\ncomponent = \"out/b.wasm\"",
            Path::new("/p"),
        )
        .unwrap()
        .functions;
        assert_eq!(requests[0].component, Path::new("/p/build/a.wasm"));
        assert_eq!(
            requests[0].build,
            Some(BuildSpec {
                lang: Lang::Python,
                source: "/p/.".into()
            })
        );
        assert_eq!(requests[1].component, Path::new("/p/out/b.wasm"));
        assert_eq!(
            requests[1].build,
            Some(BuildSpec {
                lang: Lang::Js,
                source: "/p/b".into()
            })
        );
        let err = parse("[functions.a]\nlang = \"go\"", Path::new("")).unwrap_err();
        assert!(err.contains("unknown variant `go`"), "{err}");
        let err = parse(
            "[functions.a]\ncomponent = \"a.wasm\"\nsource = \"a\"",
            Path::new(""),
        )
        .unwrap_err();
        assert!(err.contains("`source` needs `lang`"), "{err}");
    }

    #[test]
    fn secrets_bind_variables_to_secret_names_and_never_shadow_an_env_value() {
        let requests = parse(
            "[functions.a]\ncomponent = \"a.wasm\"\n[functions.a.secrets]\nSTRIPE_KEY = \"stripe\"",
            Path::new(""),
        )
        .unwrap()
        .functions;
        assert_eq!(
            requests[0].config.secrets,
            [("STRIPE_KEY".to_owned(), "stripe".to_owned())].into()
        );
        let both = parse(
            "[functions.a]\ncomponent = \"a.wasm\"\n[functions.a.env]\nK = \"v\"\n\
             [functions.a.secrets]\nK = \"s\"",
            Path::new(""),
        )
        .unwrap_err();
        assert!(both.contains("also in the env table"), "{both}");
    }

    #[test]
    fn a_manifest_in_the_working_directory_keeps_paths_relative() {
        let requests = parse("[functions.a]\ncomponent = \"a.wasm\"", Path::new(""))
            .unwrap()
            .functions;
        assert_eq!(requests[0].component, Path::new("a.wasm"));
    }

    #[test]
    fn load_resolves_against_the_manifests_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("eddy.toml");
        std::fs::write(&path, "[functions.a]\ncomponent = \"guests/a.wasm\"\n").unwrap();
        let requests = load(&path).unwrap().functions;
        assert_eq!(requests[0].component, dir.path().join("guests/a.wasm"));
    }

    #[test]
    fn unknown_keys_are_refused_by_name_at_every_level() {
        let top = parse(
            "colour = \"blue\"\n[functions.a]\ncomponent = \"a.wasm\"",
            Path::new(""),
        );
        assert!(top.unwrap_err().contains("unknown field `colour`"));

        let function = parse(
            "[functions.a]\ncomponent = \"a.wasm\"\nmemroy = \"1MiB\"",
            Path::new(""),
        );
        let err = function.unwrap_err();
        assert!(err.starts_with("line 3: unknown field `memroy`"), "{err}");
        assert!(err.ends_with(FORMAT_HINT), "{err}");
    }

    #[test]
    fn bad_values_name_the_function_and_the_key() {
        let err = parse(
            "[functions.a]\ncomponent = \"a.wasm\"\nmemory = \"lots\"",
            Path::new(""),
        )
        .unwrap_err();
        assert!(
            err.starts_with("function `a`: memory: `lots` is not a size"),
            "{err}"
        );

        let err = parse(
            "[functions.a]\ncomponent = \"a.wasm\"\ntimeout = \"2\"",
            Path::new(""),
        )
        .unwrap_err();
        assert!(
            err.starts_with("function `a`: timeout: `2` is not a duration"),
            "{err}"
        );

        let err = parse(
            "[functions.a]\ncomponent = \"a.wasm\"\n[functions.a.env]\n\"\" = \"x\"",
            Path::new(""),
        )
        .unwrap_err();
        assert!(err.starts_with("function `a`: env: "), "{err}");
    }

    #[test]
    fn a_function_needs_a_component_and_a_manifest_needs_a_function() {
        let err = parse("[functions.a]\nroute = \"/a\"", Path::new("")).unwrap_err();
        assert!(err.contains("function `a`: no `component`"), "{err}");
        assert!(
            parse("", Path::new(""))
                .unwrap_err()
                .contains("declares no functions")
        );
    }

    #[test]
    fn a_missing_manifest_says_what_to_pass() {
        let err = load(Path::new("/nonexistent/eddy.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("pass NAME FILE"), "{err}");
    }

    #[test]
    fn queues_are_declared_and_functions_publish_and_consume() {
        let manifest = parse(
            r#"
            [queues.orders]
            idempotency_window = "10m"
            [queues.emails]

            [functions.shop]
            component = "shop.wasm"
            publish = ["orders", "emails"]

            [functions.worker]
            component = "worker.wasm"
            consume = { queue = "orders", batch_size = 10, max_concurrency = 4, visibility_timeout = "90s", max_attempts = 3, backoff_base = "250ms", backoff_max = "1m", dead_letter = "parked", path = "/worker/jobs" }

            [functions.mailer]
            component = "mailer.wasm"
            consume = { queue = "emails" }
            "#,
            Path::new(""),
        )
        .unwrap();
        assert_eq!(
            manifest.queues,
            [
                CreateQueue {
                    name: "emails".into(),
                    idempotency_window_ms: None
                },
                CreateQueue {
                    name: "orders".into(),
                    idempotency_window_ms: Some(600_000)
                },
            ]
        );
        let [mailer, shop, worker] = &manifest.functions[..] else {
            panic!("three functions: {:?}", manifest.functions);
        };
        assert_eq!(shop.config.publish, ["orders", "emails"]);
        assert_eq!(shop.consume, None);
        assert_eq!(
            worker.consume,
            Some(Consume {
                queue: "orders".into(),
                consumer: ConsumerRequest {
                    function: "worker".into(),
                    batch_size: Some(10),
                    max_concurrency: Some(4),
                    visibility_timeout_ms: Some(90_000),
                    max_attempts: Some(3),
                    backoff_base_ms: Some(250),
                    backoff_max_ms: Some(60_000),
                    dead_letter: Some("parked".into()),
                    path: Some("/worker/jobs".into()),
                },
            })
        );
        let mailer_consumer = &mailer.consume.as_ref().unwrap().consumer;
        assert_eq!(
            serde_json::to_string(mailer_consumer).unwrap(),
            r#"{"function":"mailer"}"#
        );
        assert_eq!(
            serde_json::to_value(&shop.config).unwrap()["publish"],
            serde_json::json!(["orders", "emails"])
        );
    }

    #[test]
    fn a_manifest_of_queues_alone_is_enough() {
        let manifest = parse("[queues.orders]", Path::new("")).unwrap();
        assert_eq!(manifest.queues.len(), 1);
        assert!(manifest.functions.is_empty());
    }

    #[test]
    fn queue_keys_are_checked_like_the_rest() {
        let parse_err = |text: &str| parse(text, Path::new("")).unwrap_err();
        let err = parse_err("[queues.orders]\nidempotency_windw = \"5m\"");
        assert!(err.contains("unknown field `idempotency_windw`"), "{err}");
        let err = parse_err("[queues.orders]\nidempotency_window = \"5\"");
        assert!(
            err.starts_with("queue `orders`: idempotency_window: `5` is not a duration"),
            "{err}"
        );
        let err = parse_err("[queues.Orders]");
        assert!(err.starts_with("queue name `Orders` is invalid"), "{err}");
        let long = "q".repeat(59);
        assert!(parse_err(&format!("[queues.{long}]")).contains("longer than 58"));

        let function = |keys: &str| format!("[functions.w]\ncomponent = \"w.wasm\"\n{keys}");
        let err = parse_err(&function(
            "consume = { queue = \"orders\", batch-size = 2 }",
        ));
        assert!(err.contains("unknown field `batch-size`"), "{err}");
        let err = parse_err(&function("consume = { batch_size = 2 }"));
        assert!(err.contains("missing field `queue`"), "{err}");
        let err = parse_err(&function(
            "consume = { queue = \"orders\", visibility_timeout = \"soon\" }",
        ));
        assert!(
            err.starts_with("function `w`: consume: visibility_timeout: `soon` is not a duration"),
            "{err}"
        );
        let err = parse_err(&function(
            "consume = { queue = \"orders\", max_attempts = 0 }",
        ));
        assert!(
            err.starts_with("function `w`: consume: max_attempts: 0 is too few"),
            "{err}"
        );
        let err = parse_err(&function("publish = [\"Orders\"]"));
        assert!(
            err.starts_with("function `w`: publish: queue name `Orders`"),
            "{err}"
        );
    }

    #[test]
    fn dead_letter_queues_and_any_queue_can_be_named() {
        let long = "q".repeat(58);
        let text = format!(
            "[functions.w]\ncomponent = \"w.wasm\"\npublish = [\"*\"]\n\
             consume = {{ queue = \"{long}-dlq\", dead_letter = \"orders-dlq\" }}"
        );
        let manifest = parse(&text, Path::new("")).unwrap();
        assert_eq!(manifest.functions[0].config.publish, ["*"]);
        let err = parse(
            &format!(
                "[functions.w]\ncomponent = \"w.wasm\"\nconsume = {{ queue = \"q{long}-dlq\" }}"
            ),
            Path::new(""),
        )
        .unwrap_err();
        assert!(err.contains("longer than 58"), "{err}");
    }

    #[test]
    fn a_schedule_is_sent_with_only_the_keys_given() {
        let manifest = parse(
            r#"
            [functions.report]
            component = "report.wasm"
            schedule = { cron = "0 7 * * 1-5", timezone = "Europe/Paris", overlap = "allow", missed = "run-once", path = "/report/daily" }

            [functions.tick]
            component = "tick.wasm"
            schedule = { cron = "@hourly" }
            "#,
            Path::new(""),
        )
        .unwrap();
        let [report, tick] = &manifest.functions[..] else {
            panic!("two functions: {:?}", manifest.functions);
        };
        assert_eq!(
            report.config.schedule,
            Some(ScheduleSettings {
                cron: "0 7 * * 1-5".into(),
                timezone: Some("Europe/Paris".into()),
                overlap: Overlap::Allow,
                missed: Missed::RunOnce,
                path: Some("/report/daily".into()),
            })
        );
        assert_eq!(
            serde_json::to_string(&tick.config).unwrap(),
            r#"{"schedule":{"cron":"@hourly"}}"#
        );
    }

    #[test]
    fn schedule_keys_are_checked_like_the_rest() {
        let parse_err = |schedule: &str| {
            let text = format!("[functions.t]\ncomponent = \"t.wasm\"\nschedule = {schedule}");
            parse(&text, Path::new("")).unwrap_err()
        };
        let err = parse_err("{ timezone = \"UTC\" }");
        assert!(err.contains("missing field `cron`"), "{err}");
        let err = parse_err("{ cron = \"@hourly\", time_zone = \"UTC\" }");
        assert!(
            err.starts_with("line 3: unknown field `time_zone`"),
            "{err}"
        );
        let err = parse_err("{ cron = \"@hourly\", missed = \"run_once\" }");
        assert!(
            err.contains("unknown variant `run_once`, expected `skip` or `run-once`"),
            "{err}"
        );
        let err = parse_err("{ cron = \"@hourly\", overlap = \"queue\" }");
        assert!(err.contains("expected `skip` or `allow`"), "{err}");
        let err = parse_err("\"@hourly\"");
        assert!(err.starts_with("line 3: "), "{err}");
    }

    #[test]
    fn websocket_is_a_boolean_sent_as_given() {
        let manifest = parse(
            "[functions.chat]\ncomponent = \"chat.wasm\"\nwebsocket = true\n\
             [functions.plain]\ncomponent = \"plain.wasm\"\nwebsocket = false\n\
             [functions.unset]\ncomponent = \"unset.wasm\"",
            Path::new(""),
        )
        .unwrap();
        let [chat, plain, unset] = &manifest.functions[..] else {
            panic!("three functions: {:?}", manifest.functions);
        };
        assert_eq!(
            serde_json::to_string(&chat.config).unwrap(),
            r#"{"websocket":true}"#
        );
        assert_eq!(plain.config.websocket, Some(false));
        assert_eq!(unset.config.websocket, None);

        let parse_err = |value: &str| {
            let text = format!("[functions.chat]\ncomponent = \"c.wasm\"\nwebsocket = {value}");
            parse(&text, Path::new("")).unwrap_err()
        };
        let err = parse_err("\"yes\"");
        assert!(
            err.starts_with("line 3: invalid type: string \"yes\""),
            "{err}"
        );
        assert!(err.ends_with(FORMAT_HINT), "{err}");
        let err = parse_err("1");
        assert!(err.contains("expected a boolean"), "{err}");
        let err = parse(
            "[functions.chat]\ncomponent = \"c.wasm\"\nwebsockets = true",
            Path::new(""),
        )
        .unwrap_err();
        assert!(err.contains("unknown field `websockets`"), "{err}");
    }

    #[test]
    fn a_queue_has_one_consumer() {
        let err = parse(
            "[functions.a]\ncomponent = \"a.wasm\"\nconsume = { queue = \"orders\" }\n\
             [functions.b]\ncomponent = \"b.wasm\"\nconsume = { queue = \"orders\" }",
            Path::new(""),
        )
        .unwrap_err();
        assert!(
            err.starts_with("functions `a` and `b` both consume queue `orders`"),
            "{err}"
        );
    }
}
