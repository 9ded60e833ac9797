//! `GET /directives/pending` and `GET /directives/feed`: for relays and the device simulator
//! that cannot hear the fabric's push.

use super::{ApiError, ApiResult, AppState, ok, query};
use crate::contract::{FeedDirective, FeedPage, PendingDirective, PendingPage};
use crate::service::ServiceError;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use std::collections::HashMap;

/// Most devices one page of `GET /directives/pending` lists.
pub const MAX_PENDING_PAGE: usize = 10_000;

/// `GET /directives/pending?after=&limit=`: devices behind their current directive (ordered
/// by id, from after `after`), with its generation. A relay or a device simulator that cannot
/// hear the fabric's push uses it to learn whom to tell.
pub(super) async fn pending_directives(
    State(st): State<AppState>,
    q: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let q = query(q, &["after", "limit"])?;
    let limit = match q.get("limit") {
        None => 1000,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_PENDING_PAGE).contains(&n) => n,
            _ => {
                return Err(ApiError::from(ServiceError::Validation {
                    field: "limit".into(),
                    message: format!("{v:?}: a whole number from 1 to {MAX_PENDING_PAGE}"),
                }));
            }
        },
    };
    let after = q.get("after").cloned();
    let body = st
        .handle
        .call(move |core, _| {
            let page = core.pending_directives(after.as_deref(), limit);
            let next = (page.len() == limit).then(|| page.last().map(|(id, _)| id.clone()));
            let devices = page
                .into_iter()
                .map(|(device_id, generation)| PendingDirective {
                    device_id,
                    generation,
                })
                .collect();
            Ok(PendingPage {
                devices,
                next: next.flatten(),
            })
        })
        .await?;
    ok(StatusCode::OK, body)
}

/// Most devices in one page of `GET /directives/feed` (each carries its signed post, under a
/// kilobyte with the artifact's manifest).
pub const MAX_FEED_PAGE: usize = 1_000;

/// `GET /directives/feed?since=CURSOR&limit=`: the directives issued after `since` whose
/// device has not reported them applied, in issue order, each with its signed post (hex):
/// exactly the bytes the fabric pushes. A relay that cannot hear the fabric (or the device
/// simulator) follows it and hands each post on once. The answer's `cursor` is where to
/// continue; a cursor from before a coordinator restart starts over from the beginning
/// (devices ignore a generation they have applied already).
pub(super) async fn directive_feed(
    State(st): State<AppState>,
    q: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let q = query(q, &["since", "limit"])?;
    let limit = match q.get("limit") {
        None => MAX_FEED_PAGE,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_FEED_PAGE).contains(&n) => n,
            _ => {
                return Err(ApiError::from(ServiceError::Validation {
                    field: "limit".into(),
                    message: format!("{v:?}: a whole number from 1 to {MAX_FEED_PAGE}"),
                }));
            }
        },
    };
    let (asked_epoch, since) = match q.get("since") {
        None => (0, 0),
        Some(c) => parse_feed_cursor(c).ok_or_else(|| {
            ApiError::from(ServiceError::Validation {
                field: "since".into(),
                message: format!("{c:?} is not a cursor this route gave (EPOCH-SEQ in hex)"),
            })
        })?,
    };
    let (epoch, page) = st
        .handle
        .call(move |core, now| core.directive_feed(asked_epoch, since, limit, now))
        .await?;
    // An empty page keeps the cursor (or restarts it in the new epoch).
    let kept = if epoch == asked_epoch { since } else { 0 };
    let last = page.last().map_or(kept, |(seq, ..)| *seq);
    let devices = page
        .into_iter()
        .map(|(seq, device_id, generation, post)| FeedDirective {
            seq,
            device_id,
            generation,
            post: hex::encode(post),
        })
        .collect();
    ok(
        StatusCode::OK,
        FeedPage {
            devices,
            cursor: format!("{epoch:x}-{last:x}"),
        },
    )
}

/// `EPOCH-SEQ`, both in hex.
fn parse_feed_cursor(c: &str) -> Option<(u64, u64)> {
    let (e, s) = c.split_once('-')?;
    Some((
        u64::from_str_radix(e, 16).ok()?,
        u64::from_str_radix(s, 16).ok()?,
    ))
}
