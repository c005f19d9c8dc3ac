//! Contracts of `FunctionStore`: version numbering, the live pointer and its route, rollback,
//! removal, and component bytes by digest.

use super::{Backend, config, deploy, new_version, now_ms, open, reopen};
use crate::{Result, Rollup, StoreError, component_digest};

pub async fn versions_are_numbered_from_one_and_listed_newest_first<B: Backend>() -> Result<()> {
    let (_place, stores) = open::<B>().await?;
    let functions = &stores.functions;
    for (i, bytes) in [b"one".as_slice(), b"two", b"three"]
        .into_iter()
        .enumerate()
    {
        assert_eq!(
            deploy(&stores, "hello", "/hello", bytes, 100 + i as i64).await?,
            i as u32 + 1
        );
    }
    let numbers: Vec<u32> = functions
        .versions("hello")
        .await?
        .iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(numbers, [3, 2, 1]);
    let function = functions.function("hello").await?.expect("function exists");
    assert_eq!((function.live.version, function.version_count), (3, 3));
    assert_eq!(function.updated_at_ms, 102);
    assert_eq!(function.live.config, config("/hello"));
    let v2 = functions.version("hello", 2).await?.expect("v2");
    assert_eq!(v2, {
        let new = new_version("hello", "/hello", b"two", 101);
        crate::VersionRecord {
            function: new.function,
            version: 2,
            digest: new.digest,
            size_bytes: new.size_bytes,
            config: new.config,
            created_at_ms: new.created_at_ms,
        }
    });
    assert_eq!(v2.digest, component_digest(b"two"));
    assert_eq!(functions.version("hello", 4).await?, None);
    assert_eq!(functions.version("nope", 1).await?, None);
    assert_eq!(functions.function("nope").await?, None);
    assert!(
        matches!(functions.versions("nope").await, Err(StoreError::NotFound { what }) if what == "function `nope`")
    );
    Ok(())
}

pub async fn version_numbers_are_not_reused_after_rollback<B: Backend>() -> Result<()> {
    let (_place, stores) = open::<B>().await?;
    deploy(&stores, "f", "/f", b"a", 1).await?;
    deploy(&stores, "f", "/f", b"b", 2).await?;
    let rolled_back = stores.functions.set_live_version("f", 1).await?;
    assert_eq!(rolled_back.live.version, 1);
    assert_eq!(deploy(&stores, "f", "/f", b"c", 3).await?, 3);
    Ok(())
}

/// Deploys racing for one function each get a number of their own.
pub async fn concurrent_deploys_of_one_function_get_distinct_numbers<B: Backend>() -> Result<()> {
    let (_place, stores) = open::<B>().await?;
    let deploys = 8u32;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..deploys {
        let stores = stores.clone();
        tasks.spawn(async move {
            let bytes = format!("component {i}");
            deploy(&stores, "f", "/f", bytes.as_bytes(), i64::from(i)).await
        });
    }
    let mut numbers: Vec<u32> = tasks.join_all().await.into_iter().collect::<Result<_>>()?;
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=deploys).collect::<Vec<_>>());
    let function = stores.functions.function("f").await?.expect("f");
    assert_eq!(function.version_count, deploys);
    assert_eq!(
        stores.functions.versions("f").await?.len(),
        deploys as usize
    );
    Ok(())
}

/// `create_version` is atomic: refused for a route, it stores neither the function nor the
/// component bytes.
pub async fn route_conflict_is_refused_and_stores_nothing<B: Backend>() -> Result<()> {
    let (_place, stores) = open::<B>().await?;
    deploy(&stores, "a", "/shared", b"a", 1).await?;
    let err = deploy(&stores, "b", "/shared", b"b", 2)
        .await
        .expect_err("route is taken");
    assert!(
        matches!(&err, StoreError::RouteTaken { route, function } if route == "/shared" && function == "a")
    );
    assert_eq!(stores.functions.function("b").await?, None);
    assert!(
        !stores
            .functions
            .has_component(&component_digest(b"b"))
            .await?
    );
    assert_eq!(stores.functions.list_functions().await?.len(), 1);
    // Nor does a refused new version of an existing function change it.
    deploy(&stores, "c", "/c", b"c1", 3).await?;
    let before = stores.functions.function("c").await?;
    let err = deploy(&stores, "c", "/shared", b"c2", 4).await;
    assert!(matches!(err, Err(StoreError::RouteTaken { .. })), "{err:?}");
    assert_eq!(stores.functions.function("c").await?, before);
    assert!(
        !stores
            .functions
            .has_component(&component_digest(b"c2"))
            .await?
    );
    Ok(())
}

/// Two functions racing for one route: one gets it, the others are refused.
pub async fn concurrent_deploys_to_one_route_let_one_function_win<B: Backend>() -> Result<()> {
    let (_place, stores) = open::<B>().await?;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let stores = stores.clone();
        tasks.spawn(async move {
            let name = format!("f{i}");
            let result = deploy(&stores, &name, "/same", name.as_bytes(), 1).await;
            (name, result)
        });
    }
    let mut winners = Vec::new();
    for (name, result) in tasks.join_all().await {
        match result {
            Ok(version) => {
                assert_eq!(version, 1);
                winners.push(name);
            }
            Err(StoreError::RouteTaken { route, .. }) => assert_eq!(route, "/same"),
            Err(e) => return Err(e),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let listed: Vec<String> = stores
        .functions
        .list_functions()
        .await?
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert_eq!(listed, winners);
    Ok(())
}

pub async fn redeploy_keeps_own_route_and_moving_away_frees_it<B: Backend>() -> Result<()> {
    let (_place, stores) = open::<B>().await?;
    deploy(&stores, "a", "/a", b"a1", 1).await?;
    assert_eq!(deploy(&stores, "a", "/a", b"a2", 2).await?, 2);
    deploy(&stores, "a", "/a-new", b"a3", 3).await?;
    // `/a` now only belongs to a non-live version of `a`, so another function may take it.
    deploy(&stores, "b", "/a", b"b1", 4).await?;
    let names: Vec<String> = stores
        .functions
        .list_functions()
        .await?
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert_eq!(names, ["a", "b"]);
    Ok(())
}

pub async fn rollback_changes_live_version_and_refuses_taken_route<B: Backend>() -> Result<()> {
    let (_place, stores) = open::<B>().await?;
    let functions = &stores.functions;
    deploy(&stores, "a", "/old", b"a1", 1).await?;
    deploy(&stores, "a", "/new", b"a2", 2).await?;
    // The store reads the clock for `updated_at_ms`.
    let before = now_ms();
    let function = functions.set_live_version("a", 1).await?;
    assert_eq!((function.live.version, function.version_count), (1, 2));
    assert_eq!(function.live.config.route, "/old");
    assert!(function.updated_at_ms >= before);
    // Setting the live version again changes nothing.
    assert_eq!(functions.set_live_version("a", 1).await?, function);
    assert_eq!(functions.function("a").await?.as_ref(), Some(&function));
    assert_eq!(
        functions.versions("a").await?.len(),
        2,
        "no version created"
    );

    functions.set_live_version("a", 2).await?;
    deploy(&stores, "b", "/old", b"b1", 3).await?;
    let err = functions
        .set_live_version("a", 1)
        .await
        .expect_err("route is taken");
    assert!(matches!(err, StoreError::RouteTaken { function, .. } if function == "b"));
    assert_eq!(functions.function("a").await?.expect("a").live.version, 2);

    let missing = functions
        .set_live_version("a", 9)
        .await
        .expect_err("no version 9");
    assert!(matches!(missing, StoreError::NotFound { what } if what == "version 9 of `a`"));
    let missing = functions
        .set_live_version("zz", 1)
        .await
        .expect_err("no function");
    assert!(matches!(missing, StoreError::NotFound { what } if what == "function `zz`"));
    Ok(())
}

/// Removing a function removes its versions, records and rollups, and the bytes no other
/// function's version uses; not its budget.
pub async fn remove_cascades_and_keeps_components_still_referenced<B: Backend>() -> Result<()> {
    let (_place, stores) = open::<B>().await?;
    let functions = &stores.functions;
    deploy(&stores, "a", "/a", b"shared", 1).await?;
    deploy(&stores, "a", "/a", b"only-a", 2).await?;
    deploy(&stores, "b", "/b", b"shared", 3).await?;
    stores
        .invocations
        .append_invocations(
            vec![super::invocation("a", now_ms(), "a log")],
            crate::Retention::default(),
        )
        .await?;
    let minute = 60_000 * 1000;
    let one = Rollup {
        invocations: 1,
        ..Rollup::default()
    };
    stores
        .invocations
        .add_rollups(
            vec![
                ("a".into(), minute, one.clone()),
                ("b".into(), minute, one.clone()),
            ],
            0,
        )
        .await?;
    stores.cost.put_budget("a", r#"{"monthly":1}"#).await?;

    assert!(functions.remove_function("a").await?);
    assert!(!functions.remove_function("a").await?);
    assert_eq!(functions.function("a").await?, None);
    assert_eq!(functions.version("a", 1).await?, None);
    assert!(
        stores
            .invocations
            .invocations_tail("a", 10)
            .await?
            .is_empty()
    );
    assert!(stores.invocations.rollups("a", 0).await?.is_empty());
    assert_eq!(stores.invocations.rollups("b", 0).await?.len(), 1);
    assert!(matches!(
        functions.versions("a").await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(
        !functions
            .has_component(&component_digest(b"only-a"))
            .await?
    );
    assert_eq!(
        functions
            .component(&component_digest(b"shared"))
            .await?
            .as_deref(),
        Some(&b"shared"[..])
    );
    assert!(
        stores.cost.budget("a").await?.is_some(),
        "the budget is the caller's to remove"
    );

    // The freed route and name are usable again; numbering restarts for the new function.
    assert_eq!(deploy(&stores, "a", "/a", b"again", 4).await?, 1);
    assert!(stores.invocations.rollups("a", 0).await?.is_empty());
    assert!(functions.remove_function("b").await?);
    assert!(
        !functions
            .has_component(&component_digest(b"shared"))
            .await?
    );
    Ok(())
}

pub async fn components_are_content_addressed<B: Backend>() -> Result<()> {
    let (_place, stores) = open::<B>().await?;
    let functions = &stores.functions;
    let digest = component_digest(b"wasm");
    assert!(digest.starts_with("sha256:") && digest.len() == 7 + 64);
    assert_eq!(functions.component(&digest).await?, None);
    assert!(!functions.has_component(&digest).await?);
    functions.put_component(&digest, b"wasm".to_vec()).await?;
    functions.put_component(&digest, b"wasm".to_vec()).await?;
    assert_eq!(functions.component(&digest).await?, Some(b"wasm".to_vec()));
    assert!(functions.has_component(&digest).await?);
    assert!(matches!(
        functions.put_component(&digest, b"other".to_vec()).await,
        Err(StoreError::Corrupt(_))
    ));
    let other = component_digest(b"other");
    assert!(matches!(
        functions.put_component(&other, b"not other".to_vec()).await,
        Err(StoreError::Corrupt(_))
    ));
    assert!(!functions.has_component(&other).await?);

    // A version may refer to bytes stored earlier, but not to unknown bytes.
    let mut new = new_version("f", "/f", b"wasm", 1);
    assert_eq!(
        functions.create_version(new.clone(), None).await?.version,
        1
    );
    new.digest = component_digest(b"missing");
    assert!(matches!(
        functions.create_version(new.clone(), None).await,
        Err(StoreError::NotFound { .. })
    ));
    // Bytes handed in are checked against the digest, and refused bytes store nothing.
    assert!(matches!(
        functions
            .create_version(new, Some(b"not missing".to_vec()))
            .await,
        Err(StoreError::Corrupt(_))
    ));
    assert!(
        !functions
            .has_component(&component_digest(b"missing"))
            .await?
    );
    assert_eq!(functions.versions("f").await?.len(), 1);
    Ok(())
}

/// Everything `FunctionStore` committed is there after a restart, route guard included.
pub async fn functions_survive_a_restart<B: Backend>() -> Result<()> {
    let (place, stores) = open::<B>().await?;
    deploy(&stores, "a", "/a", b"a1", 1).await?;
    deploy(&stores, "a", "/a", b"a2", 2).await?;
    stores.functions.set_live_version("a", 1).await?;
    let before = stores.functions.list_functions().await?;
    let mut stores = stores;
    for _ in 0..2 {
        stores = reopen(&place, stores).await?;
        let functions = &stores.functions;
        assert_eq!(functions.list_functions().await?, before);
        let function = functions.function("a").await?.expect("a survives reopen");
        assert_eq!((function.live.version, function.version_count), (1, 2));
        assert_eq!(
            functions.component(&component_digest(b"a2")).await?,
            Some(b"a2".to_vec())
        );
        assert_eq!(
            deploy(&stores, "b", "/a", b"b", 3)
                .await
                .map_err(|e| e.to_string()),
            Err("route /a is already served by function `a`".to_owned())
        );
    }
    Ok(())
}

/// The generation grows with each change of what is served, and stays put through calls
/// that change nothing and through a restart.
pub async fn the_generation_grows_with_every_change_and_survives_a_restart<B: Backend>()
-> Result<()> {
    let (place, stores) = open::<B>().await?;
    let functions = &stores.functions;
    assert_eq!(functions.generation().await?, 0);
    let mut seen = 0;
    for step in [
        "a first version",
        "a second version",
        "a rollback",
        "a removal",
    ] {
        match step {
            "a first version" => drop(deploy(&stores, "hello", "/hello", b"one", 1).await?),
            "a second version" => drop(deploy(&stores, "hello", "/hello", b"two", 2).await?),
            "a rollback" => drop(functions.set_live_version("hello", 1).await?),
            _ => {
                // Calls that change nothing first.
                functions.set_live_version("hello", 1).await?;
                functions.function("hello").await?;
                assert!(functions.set_live_version("hello", 9).await.is_err());
                assert!(!functions.remove_function("nobody").await?);
                assert_eq!(functions.generation().await?, seen, "nothing changed");
                functions.remove_function("hello").await?;
            }
        }
        let now = functions.generation().await?;
        assert!(now > seen, "{step}: the generation stayed at {now}");
        seen = now;
    }
    let stores = reopen(&place, stores).await?;
    assert_eq!(stores.functions.generation().await?, seen);
    Ok(())
}
