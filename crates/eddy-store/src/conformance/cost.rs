//! Contracts of `CostStore`: price sheets and budgets put, replaced and removed, and a
//! budget's alert state.

use super::{Backend, open, reopen};
use crate::{BudgetRecord, Result};

pub async fn price_sheets_are_put_replaced_and_removed<B: Backend>() -> Result<()> {
    let (_place, stores) = open::<B>().await?;
    let cost = &stores.cost;
    assert!(cost.price_sheets().await?.is_empty());
    cost.put_price_sheet("zeta", "gb_second = 1.0", 1).await?;
    cost.put_price_sheet("alpha", "gb_second = 2.0", 2).await?;
    cost.put_price_sheet("zeta", "gb_second = 3.0", 3).await?;
    assert_eq!(
        cost.price_sheets().await?,
        [
            ("alpha".to_owned(), "gb_second = 2.0".to_owned()),
            ("zeta".to_owned(), "gb_second = 3.0".to_owned()),
        ]
    );
    assert!(cost.remove_price_sheet("alpha").await?);
    assert!(!cost.remove_price_sheet("alpha").await?);
    assert!(!cost.remove_price_sheet("never").await?);
    assert_eq!(
        cost.price_sheets().await?,
        [("zeta".to_owned(), "gb_second = 3.0".to_owned())]
    );
    Ok(())
}

pub async fn budgets_are_put_replaced_and_removed<B: Backend>() -> Result<()> {
    let (_place, stores) = open::<B>().await?;
    let cost = &stores.cost;
    assert!(cost.budgets().await?.is_empty());
    assert_eq!(cost.budget("").await?, None);
    cost.put_budget("f", r#"{"monthly":5}"#).await?;
    cost.put_budget("", r#"{"monthly":100}"#).await?;
    cost.put_budget("f", r#"{"monthly":7}"#).await?;
    let fresh = |scope: &str, settings: &str| BudgetRecord {
        scope: scope.to_owned(),
        settings: settings.to_owned(),
        alerted_month: String::new(),
        alerted_percent: 0.0,
    };
    assert_eq!(
        cost.budgets().await?,
        [
            fresh("", r#"{"monthly":100}"#),
            fresh("f", r#"{"monthly":7}"#)
        ],
        "the node's budget first, then by scope"
    );
    assert_eq!(
        cost.budget("f").await?,
        Some(fresh("f", r#"{"monthly":7}"#))
    );
    assert!(cost.remove_budget("f").await?);
    assert!(!cost.remove_budget("f").await?);
    assert_eq!(cost.budget("f").await?, None);
    assert_eq!(cost.budgets().await?, [fresh("", r#"{"monthly":100}"#)]);
    Ok(())
}

/// Alerts are recorded against the settings they were computed from: a budget put again
/// (even unchanged) alerts afresh, and a late record for old settings is ignored.
pub async fn a_budgets_alert_state_is_kept_until_the_budget_is_put_again<B: Backend>() -> Result<()>
{
    let (_place, stores) = open::<B>().await?;
    let cost = &stores.cost;
    let old = r#"{"monthly":5}"#;
    let new = r#"{"monthly":9}"#;
    cost.put_budget("f", old).await?;
    assert!(cost.set_budget_alerted("f", old, "2026-03", 50.0).await?);
    assert!(
        !cost.set_budget_alerted("f", old, "2026-03", 50.0).await?,
        "an alert recorded already is not recorded again"
    );
    assert!(!cost.set_budget_alerted("f", old, "2026-03", 40.0).await?);
    let alerted = cost.budget("f").await?.expect("f");
    assert_eq!(
        (alerted.alerted_month.as_str(), alerted.alerted_percent),
        ("2026-03", 50.0)
    );
    assert!(cost.set_budget_alerted("f", old, "2026-03", 80.0).await?);
    assert_eq!(cost.budget("f").await?.expect("f").alerted_percent, 80.0);

    cost.put_budget("f", new).await?;
    let reset = cost.budget("f").await?.expect("f");
    assert_eq!(
        (reset.alerted_month.as_str(), reset.alerted_percent),
        ("", 0.0)
    );
    assert!(!cost.set_budget_alerted("f", old, "2026-03", 100.0).await?);
    assert_eq!(
        cost.budget("f").await?.expect("f").alerted_percent,
        0.0,
        "a record for settings no longer stored is ignored"
    );
    assert!(cost.set_budget_alerted("f", new, "2026-04", 50.0).await?);
    assert!(
        !cost.set_budget_alerted("f", new, "2026-03", 100.0).await?,
        "a node whose clock is still in the month before changes nothing"
    );
    assert_eq!(cost.budget("f").await?.expect("f").alerted_month, "2026-04");
    cost.put_budget("f", new).await?;
    assert_eq!(
        cost.budget("f").await?.expect("f").alerted_month,
        "",
        "putting the same settings again alerts afresh too"
    );
    assert!(
        !cost
            .set_budget_alerted("nobody", new, "2026-04", 50.0)
            .await?
    );
    assert_eq!(cost.budget("nobody").await?, None, "nothing is created");
    Ok(())
}

/// Callers racing to record one alert (the nodes of a cluster, each seeing the threshold
/// crossed): exactly one records it, so exactly one sends it. A later month alerts again.
pub async fn of_callers_racing_to_record_an_alert_exactly_one_does<B: Backend>() -> Result<()> {
    let (_place, stores) = open::<B>().await?;
    let settings = r#"{"monthly":5}"#;
    stores.cost.put_budget("f", settings).await?;
    for month in ["2026-03", "2026-04"] {
        let mut racers = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let cost = stores.cost.clone();
            racers.spawn(async move { cost.set_budget_alerted("f", settings, month, 50.0).await });
        }
        let won = racers
            .join_all()
            .await
            .into_iter()
            .collect::<Result<Vec<bool>>>()?;
        assert_eq!(won.iter().filter(|w| **w).count(), 1, "{month}: {won:?}");
    }
    Ok(())
}

pub async fn price_sheets_and_budgets_survive_a_restart<B: Backend>() -> Result<()> {
    let (place, stores) = open::<B>().await?;
    stores
        .cost
        .put_price_sheet("sheet", "gb_second = 1.0", 1)
        .await?;
    stores.cost.put_budget("", r#"{"monthly":1}"#).await?;
    stores
        .cost
        .set_budget_alerted("", r#"{"monthly":1}"#, "2026-03", 75.0)
        .await?;
    let sheets = stores.cost.price_sheets().await?;
    let budgets = stores.cost.budgets().await?;
    let stores = reopen(&place, stores).await?;
    assert_eq!(stores.cost.price_sheets().await?, sheets);
    assert_eq!(stores.cost.budgets().await?, budgets);
    assert_eq!(budgets[0].alerted_percent, 75.0);
    Ok(())
}
