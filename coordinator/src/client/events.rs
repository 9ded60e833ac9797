//! Live events (`GET /events`, Server-Sent Events) and webhooks (`/hooks`).

use super::error::ClientError;
use super::transport::{Client, Method, Reply, encode_component, seg, to_value};
use crate::contract::{Event, HookInput};
use std::io::{BufRead, BufReader, Read};

/// Longest line of the stream the parser accepts (an event is far smaller).
const MAX_LINE: usize = 1 << 20;

/// Turns Server-Sent Events lines into events: `data:` lines are joined, a blank line ends an
/// event, comments (`:`) and other fields are skipped. Only `data` is kept: the event's JSON
/// carries its id and kind.
#[derive(Debug, Default)]
pub struct SseParser {
    data: String,
}

impl SseParser {
    /// Feeds one line (without its line ending); returns an event's data when the line ends
    /// one.
    pub fn line(&mut self, line: &str) -> Option<String> {
        if line.is_empty() {
            if self.data.is_empty() {
                return None;
            }
            return Some(std::mem::take(&mut self.data));
        }
        if let Some(rest) = line.strip_prefix("data:") {
            if !self.data.is_empty() {
                self.data.push('\n');
            }
            self.data.push_str(rest.strip_prefix(' ').unwrap_or(rest));
        }
        None
    }
}

/// A blocking iterator over a stream's events; it ends when the server ends the stream (a
/// client that did not read fast enough is dropped by the server) or the connection fails.
pub struct EventStream {
    reader: BufReader<Box<dyn Read + Send>>,
    parser: SseParser,
    line: String,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream").finish_non_exhaustive()
    }
}

impl Iterator for EventStream {
    type Item = Result<Event, ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.line.clear();
            let n = (&mut self.reader)
                .take(MAX_LINE as u64)
                .read_line(&mut self.line);
            match n {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            let line = self.line.trim_end_matches(['\n', '\r']);
            if let Some(data) = self.parser.line(line) {
                return Some(
                    serde_json::from_str(&data).map_err(|source| ClientError::Decode {
                        what: "GET /events".into(),
                        source,
                    }),
                );
            }
        }
    }
}

impl Client {
    /// `GET /events`: the live stream, filtered by deployment and kinds (or prefixes ending in
    /// `.`), resuming after `after` when given.
    pub fn events(
        &self,
        deployment: Option<&str>,
        kinds: &[&str],
        after: Option<u64>,
    ) -> Result<EventStream, ClientError> {
        let mut q = Vec::new();
        if let Some(d) = deployment {
            q.push(format!("deployment={}", encode_component(d)));
        }
        if !kinds.is_empty() {
            q.push(format!("kind={}", encode_component(&kinds.join(","))));
        }
        let path = if q.is_empty() {
            "/events".to_string()
        } else {
            format!("/events?{}", q.join("&"))
        };
        let headers: Vec<(&str, String)> = after
            .map(|a| vec![("Last-Event-ID", a.to_string())])
            .unwrap_or_default();
        let body = self.open_stream(&path, &headers)?;
        Ok(EventStream {
            reader: BufReader::new(Box::new(body.into_reader())),
            parser: SseParser::default(),
            line: String::new(),
        })
    }

    /// `POST /hooks`: registers a webhook; the answer carries its secret (shown only here).
    pub fn create_hook(&self, input: &HookInput) -> Result<Reply, ClientError> {
        self.call(Method::Post, "/hooks", Some(&to_value(input)))
    }

    /// `GET /hooks`.
    pub fn hooks(&self) -> Result<Reply, ClientError> {
        self.call(Method::Get, "/hooks", None)
    }

    /// `DELETE /hooks/{id}`.
    pub fn delete_hook(&self, id: &str) -> Result<Reply, ClientError> {
        self.call(Method::Delete, &format!("/hooks/{}", seg(id)), None)
    }

    /// `GET /hooks/{id}/deliveries`: the recent delivery log, newest first.
    pub fn hook_deliveries(&self, id: &str) -> Result<Reply, ClientError> {
        self.call(Method::Get, &format!("/hooks/{}/deliveries", seg(id)), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parser_joins_data_lines_and_skips_comments_and_fields() {
        let mut p = SseParser::default();
        let mut got = Vec::new();
        for l in [
            ":keep-alive",
            "",
            "id: 5",
            "event: deployment.status",
            "data: {\"a\":",
            "data:1}",
            "",
            "retry: 10",
            "",
        ] {
            got.extend(p.line(l));
        }
        assert_eq!(got, ["{\"a\":\n1}"]);
    }
}
