//! What the model tests share: the blocks of a 7-wide encoded row (a 3-way category, an
//! offset, and a 3-slot block whose last slot is never sampled).

use fedsynth_synth::encoder::Span;

/// The row layout of the model tests.
pub const SPANS: [Span; 3] = [
    Span::Softmax {
        start: 0,
        len: 3,
        sampleable: 3,
    },
    Span::Offset { index: 3 },
    Span::Softmax {
        start: 4,
        len: 3,
        sampleable: 2,
    },
];
