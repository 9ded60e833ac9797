//! The message that travels between nodes, and dotted property paths into it.
//!
//! A message is `{payload, topic, ...further properties}` (NODES.md, "Messages"). The engine moves
//! millions of messages a second, and a node that fans out sends the same message to several
//! targets, so every part of a message is reference counted: cloning a [`Msg`] costs two or three
//! atomic increments, never a deep copy of the payload. A node that modifies a message gets
//! copy-on-write semantics through [`std::sync::Arc::make_mut`]: the payload is copied only when
//! another holder still shares it.

use serde_json::{Map, Value};
use std::borrow::Cow;
use std::sync::Arc;

/// One message.
#[derive(Debug, Clone, PartialEq)]
pub struct Msg {
    /// Any JSON value, shared between the targets of a fan-out.
    pub payload: Arc<Value>,
    /// The topic; empty when the message has none.
    pub topic: Arc<str>,
    /// Further properties (`alert.level` …); `None` when there are none, which keeps the common
    /// message small and allocation-free to clone.
    pub props: Option<Arc<Map<String, Value>>>,
}

impl Default for Msg {
    fn default() -> Self {
        Msg::new(Value::Null)
    }
}

thread_local! {
    /// One empty topic per thread, so that making a message without a topic allocates nothing
    /// for the topic (and its reference count is not shared by every core).
    static EMPTY_TOPIC: Arc<str> = Arc::from("");
}

/// The empty topic.
pub fn empty_topic() -> Arc<str> {
    EMPTY_TOPIC.with(Arc::clone)
}

impl Msg {
    /// A message with this payload, an empty topic and no further properties.
    pub fn new(payload: Value) -> Self {
        Msg {
            payload: Arc::new(payload),
            topic: empty_topic(),
            props: None,
        }
    }

    /// A message with this payload and topic.
    pub fn with_topic(payload: Value, topic: &str) -> Self {
        Msg {
            payload: Arc::new(payload),
            topic: Arc::from(topic),
            props: None,
        }
    }

    /// Reads a property. `topic` gives the topic as a JSON string, `msg` the whole message as an
    /// object; an absent property gives `None`.
    pub fn get(&self, path: &PropPath) -> Option<Cow<'_, Value>> {
        match &path.root {
            Root::Msg => Some(Cow::Owned(self.to_value())),
            Root::Payload => walk(&self.payload, &path.rest).map(Cow::Borrowed),
            Root::Topic => {
                if path.rest.is_empty() {
                    Some(Cow::Owned(Value::String(self.topic.to_string())))
                } else {
                    None
                }
            }
            Root::Other(name) => {
                let props = self.props.as_ref()?;
                let first = props.get(name)?;
                walk(first, &path.rest).map(Cow::Borrowed)
            }
        }
    }

    /// Writes a property, creating intermediate objects as needed. Writing `topic` with a
    /// non-string value stores the value's JSON text. Fails when the path crosses a value that
    /// is neither an object nor absent (for example `payload.x` on a number payload).
    pub fn set(&mut self, path: &PropPath, value: Value) -> Result<(), PathError> {
        match &path.root {
            Root::Msg => Err(PathError::WholeMessage),
            Root::Payload => {
                if path.rest.is_empty() {
                    self.payload = Arc::new(value);
                    Ok(())
                } else {
                    set_in(Arc::make_mut(&mut self.payload), &path.rest, value, path)
                }
            }
            Root::Topic => {
                if !path.rest.is_empty() {
                    return Err(PathError::NotAnObject(path.text.clone()));
                }
                self.topic = match value {
                    Value::String(s) => Arc::from(s),
                    other => Arc::from(other.to_string()),
                };
                Ok(())
            }
            Root::Other(name) => {
                let props = Arc::make_mut(self.props.get_or_insert_with(Default::default));
                if path.rest.is_empty() {
                    props.insert(name.clone(), value);
                    Ok(())
                } else {
                    let slot = props
                        .entry(name.clone())
                        .or_insert_with(|| Value::Object(Map::new()));
                    set_in(slot, &path.rest, value, path)
                }
            }
        }
    }

    /// Sets the topic from a shared string without allocating.
    pub fn set_topic(&mut self, topic: Arc<str>) {
        self.topic = topic;
    }

    /// Removes a property and returns it. Deleting `payload` leaves `null`, deleting `topic`
    /// leaves the empty topic.
    pub fn delete(&mut self, path: &PropPath) -> Result<Option<Value>, PathError> {
        match &path.root {
            Root::Msg => Err(PathError::WholeMessage),
            Root::Payload => {
                if path.rest.is_empty() {
                    let old = std::mem::replace(&mut self.payload, Arc::new(Value::Null));
                    Ok(Some(Arc::unwrap_or_clone(old)))
                } else {
                    if walk(&self.payload, &path.rest).is_none() {
                        return Ok(None);
                    }
                    Ok(remove_in(Arc::make_mut(&mut self.payload), &path.rest))
                }
            }
            Root::Topic => {
                let old = std::mem::replace(&mut self.topic, empty_topic());
                Ok(Some(Value::String(old.to_string())))
            }
            Root::Other(name) => {
                let Some(props) = self.props.as_mut() else {
                    return Ok(None);
                };
                if !props.contains_key(name) {
                    return Ok(None);
                }
                let props = Arc::make_mut(props);
                if path.rest.is_empty() {
                    Ok(props.remove(name))
                } else {
                    match props.get_mut(name) {
                        Some(slot) => Ok(remove_in(slot, &path.rest)),
                        None => Ok(None),
                    }
                }
            }
        }
    }

    /// The whole message as one JSON object (`{"payload":…, "topic":…, …}`), for logging.
    pub fn to_value(&self) -> Value {
        let mut map = Map::new();
        if let Some(props) = &self.props {
            for (k, v) in props.iter() {
                map.insert(k.clone(), v.clone());
            }
        }
        map.insert("payload".into(), (*self.payload).clone());
        map.insert("topic".into(), Value::String(self.topic.to_string()));
        Value::Object(map)
    }
}

/// Why a property could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path runs through a value that is not an object.
    #[error("cannot write `{0}`: a value on the way is not an object")]
    NotAnObject(String),
    /// `msg` (the whole message) cannot be written or deleted.
    #[error("the whole message (`msg`) cannot be written or deleted")]
    WholeMessage,
    /// The path text is empty or has an empty segment.
    #[error("invalid property path `{0}`: empty segment")]
    Empty(String),
}

/// Where a path starts.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Root {
    Msg,
    Payload,
    Topic,
    Other(String),
}

/// A parsed dotted property path (`payload.temperature`, `topic`, `alert.level`, `msg`).
/// Parsing once at node start keeps string splitting off the per-message path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropPath {
    text: String,
    root: Root,
    rest: Vec<String>,
}

impl PropPath {
    /// Parses a dotted path; a leading `msg.` is accepted and ignored, as Node-RED writes it.
    pub fn parse(text: &str) -> Result<PropPath, PathError> {
        let body = text.strip_prefix("msg.").unwrap_or(text);
        if body == "msg" {
            return Ok(PropPath {
                text: text.to_string(),
                root: Root::Msg,
                rest: Vec::new(),
            });
        }
        let mut parts = body.split('.');
        let first = parts.next().unwrap_or("");
        let rest: Vec<String> = parts.map(str::to_string).collect();
        if first.is_empty() || rest.iter().any(String::is_empty) {
            return Err(PathError::Empty(text.to_string()));
        }
        let root = match first {
            "payload" => Root::Payload,
            "topic" => Root::Topic,
            other => Root::Other(other.to_string()),
        };
        Ok(PropPath {
            text: text.to_string(),
            root,
            rest,
        })
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True when the path is exactly `payload`.
    pub fn is_payload(&self) -> bool {
        self.root == Root::Payload && self.rest.is_empty()
    }
}

fn walk<'a>(mut v: &'a Value, rest: &[String]) -> Option<&'a Value> {
    for seg in rest {
        v = match v {
            Value::Object(m) => m.get(seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

fn set_in(
    mut v: &mut Value,
    rest: &[String],
    value: Value,
    path: &PropPath,
) -> Result<(), PathError> {
    let Some((last, init)) = rest.split_last() else {
        *v = value;
        return Ok(());
    };
    for seg in init {
        if v.is_null() {
            *v = Value::Object(Map::new());
        }
        v = match v {
            Value::Object(m) => m
                .entry(seg.clone())
                .or_insert_with(|| Value::Object(Map::new())),
            Value::Array(a) => match seg.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                Some(x) => x,
                None => return Err(PathError::NotAnObject(path.text.clone())),
            },
            _ => return Err(PathError::NotAnObject(path.text.clone())),
        };
    }
    if v.is_null() {
        *v = Value::Object(Map::new());
    }
    match v {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => match last.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
            Some(x) => {
                *x = value;
                Ok(())
            }
            None => Err(PathError::NotAnObject(path.text.clone())),
        },
        _ => Err(PathError::NotAnObject(path.text.clone())),
    }
}

fn remove_in(mut v: &mut Value, rest: &[String]) -> Option<Value> {
    let (last, init) = rest.split_last()?;
    for seg in init {
        v = match v {
            Value::Object(m) => m.get_mut(seg)?,
            Value::Array(a) => a.get_mut(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    match v {
        Value::Object(m) => m.remove(last),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(s: &str) -> PropPath {
        PropPath::parse(s).unwrap()
    }

    #[test]
    fn clone_shares_payload_and_write_copies_on_demand() {
        let a = Msg::new(json!({"temperature": 31.5, "big": vec![1; 1000]}));
        let mut b = a.clone();
        assert!(Arc::ptr_eq(&a.payload, &b.payload));
        b.set(&p("payload.temperature"), json!(20)).unwrap();
        assert!(!Arc::ptr_eq(&a.payload, &b.payload));
        assert_eq!(a.payload["temperature"], json!(31.5));
        assert_eq!(b.payload["temperature"], json!(20));
    }

    #[test]
    fn get_set_delete_paths() {
        let mut m = Msg::with_topic(json!({"a": {"b": [1, 2, 3]}}), "t");
        assert_eq!(m.get(&p("payload.a.b.1")).unwrap().as_ref(), &json!(2));
        assert_eq!(m.get(&p("msg.topic")).unwrap().as_ref(), &json!("t"));
        assert!(m.get(&p("payload.x.y")).is_none());
        m.set(&p("alert.level"), json!("high")).unwrap();
        assert_eq!(
            m.get(&p("alert")).unwrap().as_ref(),
            &json!({"level": "high"})
        );
        m.set(&p("topic"), json!(5)).unwrap();
        assert_eq!(&*m.topic, "5");
        assert_eq!(
            m.delete(&p("payload.a")).unwrap(),
            Some(json!({"b": [1, 2, 3]}))
        );
        assert_eq!(*m.payload, json!({}));
        assert_eq!(m.delete(&p("nothing.here")).unwrap(), None);
        let whole = m.get(&p("msg")).unwrap().into_owned();
        assert_eq!(whole["alert"]["level"], json!("high"));
    }

    #[test]
    fn writing_through_a_number_is_an_error_not_a_panic() {
        let mut m = Msg::new(json!(3));
        assert!(matches!(
            m.set(&p("payload.x"), json!(1)),
            Err(PathError::NotAnObject(_))
        ));
        assert!(PropPath::parse("payload..x").is_err());
        assert!(PropPath::parse("").is_err());
    }
}
