//! Reading terminal frames tolerantly, and writing the frames the server sends in either dialect.
//!
//! Terminals are read the way the vendor's own server reads them: a value is the text of the
//! first element with that tag name, wherever it sits (`GetElementsByTagName(tag)[0].InnerText`).
//! So a frame is flattened into its leaf elements in document order and looked up by name.

use std::borrow::Cow;

use quick_xml::Reader;
use quick_xml::escape::{partial_escape, resolve_predefined_entity};
use quick_xml::events::Event;

use crate::json;

/// Deeper nesting than this is not a terminal message (theirs are two levels deep): dropped.
const MAX_DEPTH: usize = 16;
/// More leaves than this is not a terminal message (the largest, `GetDeviceInfoAll`, has about a
/// hundred): dropped, so a hostile 1 MiB frame of `<a/>` cannot cost a quarter million entries.
const MAX_LEAVES: usize = 1024;

/// A parsed frame: the root element's name and every leaf element (no child elements) in
/// document order with its text, entities resolved.
pub(super) struct Doc<'a> {
    root: String,
    leaves: Vec<(String, Cow<'a, str>)>,
}

/// An element still open while reading.
struct Open<'a> {
    name: String,
    has_child: bool,
    text: Option<Cow<'a, str>>,
}

impl<'a> Doc<'a> {
    /// Parses one frame; `None` when it is not a complete XML document within the caps. Accepts
    /// mismatched end tags (the vendor document's `<Reuqest>GetUserData</Request>`), with or
    /// without a declaration, any whitespace between tags, and a dangling `&`.
    pub fn parse(frame: &'a [u8]) -> Option<Doc<'a>> {
        let mut reader = Reader::from_reader(frame);
        let config = reader.config_mut();
        config.check_end_names = false;
        config.allow_dangling_amp = true;
        let mut stack: Vec<Open<'a>> = Vec::new();
        let mut root = None;
        let mut leaves = Vec::new();
        loop {
            match reader.read_event().ok()? {
                Event::Start(e) => {
                    if stack.len() >= MAX_DEPTH {
                        return None;
                    }
                    let name = element_name(e.local_name().as_ref())?;
                    match stack.last_mut() {
                        Some(parent) => {
                            parent.has_child = true;
                            parent.text = None;
                        }
                        None => root = Some(name.clone()),
                    }
                    stack.push(Open {
                        name,
                        has_child: false,
                        text: None,
                    });
                }
                Event::Empty(e) => {
                    let name = element_name(e.local_name().as_ref())?;
                    let Some(parent) = stack.last_mut() else {
                        // `<Message/>`: a whole (empty) document.
                        root = Some(name.clone());
                        leaves.push((name, Cow::Borrowed("")));
                        break;
                    };
                    parent.has_child = true;
                    parent.text = None;
                    leaves.push((name, Cow::Borrowed("")));
                }
                Event::End(_) => {
                    let open = stack.pop()?;
                    if !open.has_child {
                        leaves.push((open.name, open.text.unwrap_or_default()));
                    }
                    if stack.is_empty() {
                        // The root closed: whatever follows is not part of the message.
                        break;
                    }
                }
                Event::Text(t) => append(&mut stack, t.xml10_content().ok()?),
                Event::CData(t) => append(&mut stack, t.decode().ok()?),
                Event::GeneralRef(r) => {
                    let text = match r.resolve_char_ref() {
                        Ok(Some(c)) => Cow::Owned(c.to_string()),
                        Ok(None) => {
                            let name = r.decode().ok()?;
                            match resolve_predefined_entity(&name) {
                                Some(s) => Cow::Borrowed(s),
                                // An entity we cannot know (DTDs are never read): kept as written.
                                None => Cow::Owned(format!("&{name};")),
                            }
                        }
                        Err(_) => return None,
                    };
                    append(&mut stack, text);
                }
                // A frame that ends before its root closes was cut off: nothing in it is trusted.
                Event::Eof => return None,
                Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {}
            }
            if leaves.len() > MAX_LEAVES {
                return None;
            }
        }
        Some(Doc {
            root: root?,
            leaves,
        })
    }

    pub fn root(&self) -> &str {
        &self.root
    }

    /// The trimmed text of the first leaf named `tag` (terminals pad values: `<Event> TimeLog_v2</Event>`).
    pub fn get(&self, tag: &str) -> Option<&str> {
        self.leaves
            .iter()
            .find(|(name, _)| name == tag)
            .map(|(_, value)| value.trim())
    }

    /// Like `get`, but an empty value counts as absent.
    pub fn get_nonempty(&self, tag: &str) -> Option<&str> {
        self.get(tag).filter(|v| !v.is_empty())
    }

    /// Every leaf as a JSON object of strings, first occurrence of each name, in document order.
    pub fn to_json(&self) -> String {
        let mut out = String::from("{");
        for (i, (name, value)) in self.leaves.iter().enumerate() {
            if self.leaves[..i].iter().any(|(earlier, _)| earlier == name) {
                continue;
            }
            if out.len() > 1 {
                out.push(',');
            }
            json::push_str(&mut out, name);
            out.push(':');
            json::push_str(&mut out, value.trim());
        }
        out.push('}');
        out
    }
}

/// A tag's local name (namespace prefix dropped), with the vendor's misspelling corrected.
fn element_name(raw: &[u8]) -> Option<String> {
    let name = std::str::from_utf8(raw).ok()?;
    Some(if name == "Reuqest" {
        "Request".to_owned()
    } else {
        name.to_owned()
    })
}

/// Adds text to the innermost open element, unless it already has children (then its own text is
/// formatting whitespace around them, not a value).
fn append<'a>(stack: &mut [Open<'a>], more: Cow<'a, str>) {
    let Some(top) = stack.last_mut() else { return };
    if top.has_child {
        return;
    }
    match &mut top.text {
        None => top.text = Some(more),
        Some(text) => text.to_mut().push_str(&more),
    }
}

/// How a terminal frames its messages. Fixed by the first frame it sends: it is answered in the
/// dialect it spoke.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Dialect {
    /// SmackBio's own: `<Message><Request>Register</Request>…</Message>`.
    Vendor,
    /// The iotaccess dashboard page's: `<Request><Operation>Register</Operation>…</Request>`.
    Dashboard,
}

/// Appends `<tag>value</tag>` with the value escaped.
pub(super) fn push_tag(out: &mut String, tag: &str, value: &str) {
    out.push('<');
    out.push_str(tag);
    out.push('>');
    out.push_str(&partial_escape(value));
    out.push_str("</");
    out.push_str(tag);
    out.push('>');
}

impl Dialect {
    /// A message with a name and fields: server requests (`kind` = `Request`) and replies to the
    /// terminal's requests (`Response`). Vendor: the C# sample's layout, one `\r\n\t<Tag>` per
    /// field, declaration first; dashboard: the page's `<Request><Operation>` shape on one line.
    pub fn message(self, kind: &str, name: &str, fields: &[(&str, &str)]) -> String {
        let mut out = String::new();
        match self {
            Dialect::Vendor => {
                out.push_str("<?xml version=\"1.0\"?>\r\n<Message>");
                out.push_str("\r\n\t");
                push_tag(&mut out, kind, name);
                for (tag, value) in fields {
                    out.push_str("\r\n\t");
                    push_tag(&mut out, tag, value);
                }
                out.push_str("\r\n</Message>");
            }
            Dialect::Dashboard => {
                out.push('<');
                out.push_str(kind);
                out.push('>');
                push_tag(&mut out, "Operation", name);
                for (tag, value) in fields {
                    push_tag(&mut out, tag, value);
                }
                out.push_str("</");
                out.push_str(kind);
                out.push('>');
            }
        }
        out
    }

    /// The answer to a terminal's event. Vendor: the C# sample's one-line event ack
    /// (`Response`, `Result`, then the echoed fields); dashboard: `Operation`, `Result`, echoes.
    pub fn event_ack(self, name: &str, ok: bool, echo: &[(&str, &str)]) -> String {
        let mut out = String::new();
        match self {
            Dialect::Vendor => {
                out.push_str("<?xml version=\"1.0\"?><Message>");
                push_tag(&mut out, "Response", name);
                push_tag(&mut out, "Result", if ok { "OK" } else { "Fail" });
            }
            Dialect::Dashboard => {
                out.push_str("<Response>");
                push_tag(&mut out, "Operation", name);
                push_tag(&mut out, "Result", if ok { "success" } else { "fail" });
            }
        }
        for (tag, value) in echo {
            push_tag(&mut out, tag, value);
        }
        out.push_str(match self {
            Dialect::Vendor => "</Message>",
            Dialect::Dashboard => "</Response>",
        });
        out
    }

    /// A result word as this dialect spells it.
    pub fn result(self, ok: bool) -> &'static str {
        match (self, ok) {
            (Dialect::Vendor, true) => "OK",
            (Dialect::Vendor, false) => "Fail",
            (Dialect::Dashboard, true) => "success",
            (Dialect::Dashboard, false) => "fail",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_found_anywhere_trimmed_and_unescaped() {
        let frame = b"<?xml version=\"1.0\"?>\r\n<Message>\r\n\t<Event> TimeLog_v2</Event>\r\n\t<Wrap><UserID>\t42 </UserID></Wrap><Name>R&amp;D &#65;&#x42; &nope; <![CDATA[<x>]]></Name><Empty/></Message>trailing";
        let doc = Doc::parse(frame).unwrap();
        assert_eq!(doc.root(), "Message");
        assert_eq!(doc.get("Event"), Some("TimeLog_v2"));
        assert_eq!(doc.get("UserID"), Some("42"));
        assert_eq!(doc.get("Name"), Some("R&D AB &nope; <x>"));
        assert_eq!(doc.get("Empty"), Some(""));
        assert_eq!(doc.get_nonempty("Empty"), None);
        // `Wrap` has a child: it is structure, not a value.
        assert_eq!(doc.get("Wrap"), None);
    }

    #[test]
    fn the_misspelt_request_tag_and_namespaces_are_tolerated() {
        let doc =
            Doc::parse(b"<Message><Reuqest>GetUserData</Request><x:UserID>7</x:UserID></Message>")
                .unwrap();
        assert_eq!(doc.get("Request"), Some("GetUserData"));
        assert_eq!(doc.get("UserID"), Some("7"));
    }

    #[test]
    fn cut_off_deep_or_huge_documents_are_dropped() {
        assert!(Doc::parse(b"<Message><Event>TimeLog_v2</Event>").is_none());
        assert!(Doc::parse(b"").is_none());
        assert!(Doc::parse(b"just text").is_none());
        assert!(Doc::parse(b"</Message>").is_none());
        let deep = "<a>".repeat(MAX_DEPTH + 1) + &"</a>".repeat(MAX_DEPTH + 1);
        assert!(Doc::parse(deep.as_bytes()).is_none());
        let wide = format!("<m>{}</m>", "<a/>".repeat(MAX_LEAVES + 1));
        assert!(Doc::parse(wide.as_bytes()).is_none());
        let ok = format!("<m>{}</m>", "<a/>".repeat(MAX_LEAVES));
        assert!(Doc::parse(ok.as_bytes()).is_some());
    }

    #[test]
    fn to_json_keeps_the_first_of_repeated_tags() {
        let doc =
            Doc::parse(b"<Message><Response>X</Response><V>\"1\"</V><V>2</V></Message>").unwrap();
        assert_eq!(doc.to_json(), r#"{"Response":"X","V":"\"1\""}"#);
    }

    #[test]
    fn writers_escape_values() {
        let v = Dialect::Vendor.message("Response", "Register", &[("DeviceSerialNo", "a<b&c")]);
        assert_eq!(
            v,
            "<?xml version=\"1.0\"?>\r\n<Message>\r\n\t<Response>Register</Response>\r\n\t<DeviceSerialNo>a&lt;b&amp;c</DeviceSerialNo>\r\n</Message>"
        );
        let d = Dialect::Dashboard.message("Request", "SetTime", &[("Time", "t")]);
        assert_eq!(
            d,
            "<Request><Operation>SetTime</Operation><Time>t</Time></Request>"
        );
    }
}
