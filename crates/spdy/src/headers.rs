//! The name/value header block carried by SYN_STREAM, SYN_REPLY and HEADERS.

/// An ordered set of headers, each name with one or more values.
///
/// Names are stored lower-cased (SPDY/3 requires lower-case names) and are
/// unique: adding a value under an existing name appends to that name's values,
/// which travel on the wire as one NUL-separated value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<(String, Vec<String>)>,
}

impl Headers {
    /// An empty header set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `value` to the values of `name` (lower-cased), adding the name
    /// if it is new.
    pub fn add(&mut self, name: impl AsRef<str>, value: impl Into<String>) -> &mut Self {
        let name = name.as_ref().to_ascii_lowercase();
        let value = value.into();
        match self.entries.iter_mut().find(|(n, _)| *n == name) {
            Some((_, values)) => values.push(value),
            None => self.entries.push((name, vec![value])),
        }
        self
    }

    /// Sets `name` (lower-cased) to the single value `value`, replacing any
    /// earlier values.
    pub fn set(&mut self, name: impl AsRef<str>, value: impl Into<String>) -> &mut Self {
        let name = name.as_ref().to_ascii_lowercase();
        let value = value.into();
        match self.entries.iter_mut().find(|(n, _)| *n == name) {
            Some((_, values)) => *values = vec![value],
            None => self.entries.push((name, vec![value])),
        }
        self
    }

    /// Removes `name` and returns its values, if it was present.
    pub fn remove(&mut self, name: &str) -> Option<Vec<String>> {
        let name = name.to_ascii_lowercase();
        let pos = self.entries.iter().position(|(n, _)| *n == name)?;
        Some(self.entries.remove(pos).1)
    }

    /// All values of `name` (matched case-insensitively).
    pub fn get_all(&self, name: &str) -> Option<&[String]> {
        self.entries
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The first value of `name` (matched case-insensitively).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.get_all(name)
            .and_then(|v| v.first())
            .map(String::as_str)
    }

    /// Iterates over `(name, values)` in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
    }

    /// Number of distinct names.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no headers.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Inserts a decoded entry whose name is already known to be valid and new.
    pub(crate) fn push_decoded(&mut self, name: String, values: Vec<String>) {
        self.entries.push((name, values));
    }
}

impl<N: AsRef<str>, V: Into<String>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        let mut headers = Headers::new();
        for (name, value) in iter {
            headers.add(name, value);
        }
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lowercased_and_merged() {
        let mut h = Headers::new();
        h.add("StreamType", "stdout").add("streamtype", "stderr");
        assert_eq!(h.len(), 1);
        assert_eq!(
            h.get_all("STREAMTYPE"),
            Some(&["stdout".to_string(), "stderr".to_string()][..])
        );
        assert_eq!(h.get("streamtype"), Some("stdout"));
        h.set("streamtype", "error");
        assert_eq!(h.get_all("streamtype").map(<[String]>::len), Some(1));
        assert_eq!(h.remove("StreamType"), Some(vec!["error".to_string()]));
        assert!(h.is_empty());
        assert_eq!(h.remove("streamtype"), None);
    }

    #[test]
    fn from_iterator_keeps_order() {
        let h: Headers = [("b", "1"), ("a", "2"), ("b", "3")].into_iter().collect();
        let names: Vec<&str> = h.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["b", "a"]);
        assert_eq!(h.get_all("b").map(<[String]>::len), Some(2));
    }
}
