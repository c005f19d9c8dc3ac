//! The control API of cost: reports, price sheets and budgets. The contract is
//! `docs/api.md#cost`.

use axum::body::Body;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, put};
use axum::{Json, Router};
use eddy_parse::api::CostQuery;
use serde_json::{Value, json};

use super::{ApiState, find_function};
use crate::cost::budget::{BudgetSettings, evaluate, label};
use crate::cost::{
    self, DAY_MS, FORECAST_TRAILING_DAYS, PriceSheet, ReportQuery, price_sheets, sheets,
};
use crate::error::ApiError;
use crate::problem::Problem;

/// The cost routes, merged under `/v1`.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/cost", get(report))
        .route("/price-sheets", get(list_sheets))
        .route(
            "/price-sheets/{name}",
            put(put_sheet)
                .delete(remove_sheet)
                .layer(DefaultBodyLimit::disable()),
        )
        .route("/budgets", get(list_budgets))
        .route(
            "/budgets/node",
            put(put_node_budget).delete(remove_node_budget),
        )
        .route(
            "/budgets/functions/{name}",
            put(put_function_budget).delete(remove_function_budget),
        )
}

async fn report(
    State(state): State<ApiState>,
    query: Result<Query<CostQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| {
        ApiError::bad_request(format!(
            "invalid cost query (function, since_ms, sheet): {}",
            e.body_text()
        ))
    })?;
    if let Some(function) = &query.function {
        find_function(&state, function).await?;
    }
    let now = state.parts.clock.now_ms();
    let month_start = cost::month_of(now).0;
    let retention = state.limits.rollup_retention_ms;
    let from_ms = match query.since_ms {
        None => month_start,
        Some(since) => match i64::try_from(since) {
            Ok(since) if since <= retention => now - since,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "since_ms {since} reaches back past limits.rollup_retention_ms ({retention} ms): older minutes are deleted"
                )));
            }
        },
    };
    let all = price_sheets(&state.parts).await?;
    let chosen: Vec<PriceSheet> = match &query.sheet {
        None => all,
        Some(names) => {
            let mut chosen = Vec::new();
            for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                match all.iter().find(|s| s.name == name) {
                    Some(sheet) => chosen.push(sheet.clone()),
                    None => return Err(no_sheet(name, &all)),
                }
            }
            chosen
        }
    };
    let load_from = from_ms
        .min(month_start)
        .min(now - FORECAST_TRAILING_DAYS * DAY_MS);
    let minutes = cost::minutes_since(&state.parts, load_from).await?;
    let report_query = ReportQuery {
        function: query.function.as_deref(),
        from_ms,
        now_ms: now,
        sheets: &chosen,
    };
    let report = cost::report(&report_query, &minutes);
    let mut json = serde_json::to_value(report)
        .map_err(|e| ApiError::internal("the cost report does not encode", e))?;
    // Each node's share of the window, priced the same way (a machine sheet prices each
    // node as one machine).
    let nodes: Vec<Value> = cost::shares_since(&state.parts, from_ms)
        .await?
        .into_iter()
        .map(|(node, minutes)| {
            let share = cost::report(&report_query, &minutes);
            json!({
                "node": node,
                "invocations": share.usage.invocations,
                "cpu_ms": share.usage.cpu_ms,
                "sheets": share.sheets.iter().map(|s| json!({
                    "sheet": s.sheet,
                    "cost_usd": s.cost_usd,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json["nodes"] = Value::Array(nodes);
    Ok(Json(json))
}

fn no_sheet(name: &str, all: &[PriceSheet]) -> ApiError {
    let names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
    ApiError::not_found(format!(
        "no price sheet named `{name}`; the node has: {}",
        names.join(", ")
    ))
}

async fn list_sheets(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let user = state.parts.stores.cost.price_sheets().await?;
    let sheets: Vec<Value> = sheets::all(&user)
        .into_iter()
        .map(|(sheet, built_in)| {
            let mut value = serde_json::to_value(&sheet).unwrap_or(Value::Null);
            value["built_in"] = json!(built_in);
            value
        })
        .collect();
    Ok(Json(json!({ "sheets": sheets })))
}

async fn put_sheet(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let max = state.limits.price_sheet_bytes_max;
    let bytes = axum::body::to_bytes(body, max).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "price_sheet_too_large",
            format!("the price sheet is larger than limits.price_sheet_bytes_max ({max} bytes)"),
        )
    })?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| ApiError::bad_request("the price sheet is not UTF-8 text"))?;
    let sheet = PriceSheet::from_toml(text).map_err(ApiError::bad_request)?;
    if sheet.name != name {
        return Err(ApiError::bad_request(format!(
            "the sheet is named `{}` but was sent to /v1/price-sheets/{name}",
            sheet.name
        )));
    }
    let (owned, text) = (name.clone(), text.to_string());
    let now = state.parts.clock.now_ms();
    state
        .parts
        .stores
        .cost
        .put_price_sheet(&owned, &text, now)
        .await?;
    state.parts.budgets.changed.notify_one();
    Ok(Json(serde_json::to_value(&sheet).unwrap_or(Value::Null)))
}

async fn remove_sheet(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let owned = name.clone();
    if state.parts.stores.cost.remove_price_sheet(&owned).await? {
        state.parts.budgets.changed.notify_one();
        return Ok(StatusCode::NO_CONTENT);
    }
    if sheets::built_in().iter().any(|s| s.name == name) {
        return Err(ApiError::bad_request(format!(
            "`{name}` is a built-in sheet and cannot be removed; add a sheet of that name to replace it"
        )));
    }
    Err(ApiError::not_found(format!(
        "no user price sheet named `{name}`"
    )))
}

async fn list_budgets(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let budgets = evaluate(&state.parts).await?;
    Ok(Json(json!({ "budgets": budgets })))
}

async fn put_node_budget(
    State(state): State<ApiState>,
    body: Result<Json<BudgetSettings>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    put_budget(state, String::new(), body).await
}

async fn put_function_budget(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Result<Json<BudgetSettings>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    find_function(&state, &name).await?;
    put_budget(state, name, body).await
}

async fn put_budget(
    state: ApiState,
    scope: String,
    body: Result<Json<BudgetSettings>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(settings) =
        body.map_err(|e| ApiError::bad_request(format!("invalid budget: {}", e.body_text())))?;
    let all = price_sheets(&state.parts).await?;
    settings
        .validate(&all, &state.budget_webhook_hosts)
        .map_err(Problem::from)?;
    let text = serde_json::to_string(&settings)
        .map_err(|e| ApiError::internal("the budget does not encode", e))?;
    let owned = scope.clone();
    state.parts.stores.cost.put_budget(&owned, &text).await?;
    state.parts.budgets.changed.notify_one();
    let status = evaluate(&state.parts)
        .await?
        .into_iter()
        .find(|b| b.scope == label(&scope));
    Ok(Json(serde_json::to_value(status).unwrap_or(Value::Null)))
}

async fn remove_node_budget(State(state): State<ApiState>) -> Result<StatusCode, ApiError> {
    remove_budget(state, String::new()).await
}

async fn remove_function_budget(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    remove_budget(state, name).await
}

async fn remove_budget(state: ApiState, scope: String) -> Result<StatusCode, ApiError> {
    let owned = scope.clone();
    if !state.parts.stores.cost.remove_budget(&owned).await? {
        return Err(ApiError::not_found(format!(
            "no budget for {}",
            label(&scope)
        )));
    }
    state.parts.meter.budget_removed(&label(&scope));
    state.parts.budgets.changed.notify_one();
    Ok(StatusCode::NO_CONTENT)
}
