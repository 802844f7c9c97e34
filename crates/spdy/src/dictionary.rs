//! The SPDY/3 header compression dictionary (SPDY/3 draft, section 2.6.10.1).
//!
//! Protocol data: every SPDY/3 peer must use exactly these 1423 bytes. The
//! dictionary opens with header names and values, each preceded by its
//! length as a 4-byte big-endian number, and ends with a run of raw text;
//! the length prefixes are computed here at compile time from [`WORDS`].

/// The length-prefixed entries, in order.
const WORDS: &[&str] = &[
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

/// The raw text after the last entry.
const TAIL: &[u8] = b"\
    100101201202205206300302303304305306307402405406\
    407408409410411412413414415416417502504505203 No\
    n-Authoritative Information204 No Content301 Mov\
    ed Permanently400 Bad Request401 Unauthorized403\
    \x20Forbidden404 Not Found500 Internal Server Error\
    501 Not Implemented503 Service UnavailableJan Fe\
    b Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00\
    :00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunke\
    d,text/html,image/png,image/jpg,image/gif,applic\
    ation/xml,application/xhtml+xml,text/plain,text/\
    javascript,publicprivatemax-age=gzip,deflate,sdc\
    hcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.\
";

const LEN: usize = prefixed_len(WORDS) + TAIL.len();

pub(crate) const DICTIONARY: &[u8] = &build();

const fn prefixed_len(words: &[&str]) -> usize {
    let mut len = 0;
    let mut i = 0;
    while i < words.len() {
        len += 4 + words[i].len();
        i += 1;
    }
    len
}

/// Lays out [`WORDS`] (each after its length) and then [`TAIL`].
const fn build() -> [u8; LEN] {
    let mut out = [0u8; LEN];
    let mut at = 0;
    let mut w = 0;
    while w < WORDS.len() {
        let word = WORDS[w].as_bytes();
        // Every entry is far shorter than 2^32 bytes.
        at = put(&mut out, at, &(word.len() as u32).to_be_bytes());
        at = put(&mut out, at, word);
        w += 1;
    }
    put(&mut out, at, TAIL);
    out
}

/// Copies `bytes` into `out` at `at`; returns the offset after them.
const fn put(out: &mut [u8; LEN], at: usize, bytes: &[u8]) -> usize {
    let mut i = 0;
    while i < bytes.len() {
        out[at + i] = bytes[i];
        i += 1;
    }
    at + bytes.len()
}
