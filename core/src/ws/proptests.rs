//! Property tests of the decoder over random input: it never panics, and how the input is
//! split into reads never changes what it decodes.

use super::frame::{Decoder, Limits};
use super::testkit::{LenEncoding, Outcome, Owned, XorShift, client_frame_with, drive};

/// Event kinds and sizes: enough to tell outcomes apart without printing megabytes.
fn summary((events, error): &Outcome) -> String {
    let events: Vec<String> = events
        .iter()
        .map(|event| match event {
            Owned::Text(payload) => format!("Text({})", payload.len()),
            Owned::Binary(payload) => format!("Binary({})", payload.len()),
            Owned::Ping(payload) => format!("Ping({})", payload.len()),
            Owned::Pong(payload) => format!("Pong({})", payload.len()),
            Owned::Close(code, reason) => format!("Close({code:?}, {})", reason.len()),
        })
        .collect();
    format!("{events:?} then {error:?}")
}

/// Decodes `stream` whole, one byte per read, and in random reads, and checks that all three
/// agree; returns the outcome.
fn decode_split_three_ways(stream: &[u8], limits: Limits, rng: &mut XorShift) -> Outcome {
    let whole = drive(&mut Decoder::new(limits), [stream]);
    let bytewise = drive(&mut Decoder::new(limits), stream.chunks(1));
    assert!(
        bytewise == whole,
        "byte at a time: {} whole: {}",
        summary(&bytewise),
        summary(&whole)
    );
    let mut chunks = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(1 + rng.below(rest.len().min(300)));
        chunks.push(chunk);
        rest = tail;
    }
    let random = drive(&mut Decoder::new(limits), chunks);
    assert!(
        random == whole,
        "random reads: {} whole: {}",
        summary(&random),
        summary(&whole)
    );
    whole
}

/// Random text mixing 1- to 4-byte characters, so fragment splits land inside characters.
fn random_text(rng: &mut XorShift, max_len: usize) -> Vec<u8> {
    const CHARS: [char; 12] = [
        'a', 'Z', '0', ' ', '{', '\u{7F}', '\u{80}', 'é', '€', '中', '\u{FFFF}', '😀',
    ];
    let mut text = String::new();
    while text.len() < max_len {
        text.push(CHARS[rng.below(CHARS.len())]);
    }
    text.into_bytes()
}

fn random_len(rng: &mut XorShift) -> usize {
    match rng.below(100) {
        0 => 65_536 + rng.below(3000),
        1..=10 => 126 + rng.below(400),
        _ => rng.below(126),
    }
}

struct StreamBuilder<'r> {
    rng: &'r mut XorShift,
    bytes: Vec<u8>,
    expected: Vec<Owned>,
}

impl StreamBuilder<'_> {
    fn frame(&mut self, first: u8, payload: &[u8]) {
        let key = (self.rng.next() as u32).to_ne_bytes();
        let is_control = first & 0x08 != 0;
        let encoding = match self.rng.below(10) {
            _ if is_control => LenEncoding::Shortest,
            0 => LenEncoding::Bits64,
            1 => LenEncoding::Bits16,
            _ => LenEncoding::Shortest,
        };
        self.bytes
            .extend(client_frame_with(first, payload, key, encoding));
    }

    fn maybe_control(&mut self) {
        if self.rng.chance(4) {
            let len = self.rng.below(126);
            let payload = self.rng.bytes(len);
            if self.rng.chance(2) {
                self.frame(0x89, &payload);
                self.expected.push(Owned::Ping(payload));
            } else {
                self.frame(0x8A, &payload);
                self.expected.push(Owned::Pong(payload));
            }
        }
    }

    /// A data message, cut into up to four fragments with control frames between them.
    fn message(&mut self) {
        let text = self.rng.chance(2);
        let len = random_len(self.rng);
        let payload = if text {
            random_text(self.rng, len)
        } else {
            self.rng.bytes(len)
        };
        let mut cuts: Vec<usize> = (0..self.rng.below(4))
            .map(|_| self.rng.below(payload.len() + 1))
            .collect();
        cuts.sort_unstable();
        cuts.push(payload.len());
        let mut start = 0;
        for (index, &end) in cuts.iter().enumerate() {
            let fin = if index + 1 == cuts.len() { 0x80 } else { 0 };
            let opcode = match (index, text) {
                (0, true) => 0x1,
                (0, false) => 0x2,
                _ => 0x0,
            };
            self.frame(fin | opcode, &payload[start..end]);
            start = end;
            if fin == 0 {
                self.maybe_control();
            }
        }
        self.expected.push(if text {
            Owned::Text(payload)
        } else {
            Owned::Binary(payload)
        });
        self.maybe_control();
    }

    fn close(&mut self) {
        const CODES: [u16; 6] = [1000, 1001, 1008, 1011, 3000, 4999];
        let code = CODES[self.rng.below(CODES.len())];
        let len = self.rng.below(30);
        let reason = random_text(self.rng, len);
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(&reason);
        self.frame(0x88, &payload);
        self.expected.push(Owned::Close(
            Some(code),
            String::from_utf8(reason).unwrap_or_default(),
        ));
    }
}

fn valid_stream(rng: &mut XorShift) -> (Vec<u8>, Vec<Owned>) {
    let mut builder = StreamBuilder {
        rng,
        bytes: Vec::new(),
        expected: Vec::new(),
    };
    for _ in 0..1 + builder.rng.below(8) {
        builder.message();
    }
    if builder.rng.chance(2) {
        builder.close();
    }
    (builder.bytes, builder.expected)
}

#[test]
fn valid_streams_decode_the_same_however_they_are_split() {
    let mut rng = XorShift::new(0xF1EE7);
    for _ in 0..300 {
        let (stream, expected) = valid_stream(&mut rng);
        let outcome = decode_split_three_ways(&stream, Limits::default(), &mut rng);
        let expected = (expected, None);
        assert!(
            outcome == expected,
            "decoded {} expected {}",
            summary(&outcome),
            summary(&expected)
        );
    }
}

#[test]
fn corrupted_streams_never_panic_and_fail_the_same_however_split() {
    let mut rng = XorShift::new(0xBAD5EED);
    let mut codes = std::collections::BTreeSet::new();
    for _ in 0..300 {
        let (mut stream, _) = valid_stream(&mut rng);
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(stream.len());
            stream[at] ^= 1 << rng.below(8);
        }
        stream.truncate(stream.len() - rng.below(stream.len() / 4 + 1));
        let limits = Limits {
            max_message: if rng.chance(4) {
                rng.below(2000)
            } else {
                1 << 20
            },
        };
        if let (_, Some(error)) = decode_split_three_ways(&stream, limits, &mut rng) {
            codes.insert(error.code);
        }
    }
    // Most flips land in payloads, where nothing can notice them; this checks that the error
    // paths were exercised all the same.
    assert_eq!(codes.into_iter().collect::<Vec<_>>(), [1002, 1007, 1009]);
}

#[test]
fn random_bytes_never_panic_and_decode_the_same_however_split() {
    let mut rng = XorShift::new(42);
    let mut events = 0;
    let mut codes = std::collections::BTreeSet::new();
    for _ in 0..30_000 {
        let len = rng.below(48);
        let mut bytes = rng.bytes(len);
        // Mostly plausible first headers (no reserved bit, masked, a length that may fit), so
        // that the deeper checks and the payload paths run too.
        if !rng.chance(4) {
            if let Some(first) = bytes.first_mut() {
                *first &= 0x8F;
            }
            if let Some(second) = bytes.get_mut(1) {
                *second = 0x80 | (*second % 48);
            }
        }
        let limits = Limits {
            max_message: rng.below(64),
        };
        let (decoded, error) = decode_split_three_ways(&bytes, limits, &mut rng);
        events += decoded.len();
        codes.extend(error.map(|error| error.code));
    }
    assert!(events > 500, "only {events} events decoded");
    assert_eq!(codes.into_iter().collect::<Vec<_>>(), [1002, 1007, 1009]);
}
