//! A streaming summary of a window, kept beside the recurrent state: per segment of `stride`
//! consecutive samples and per feature, the mean value and the mean absolute step
//! `|x_t - x_{t-1}|` (0 for the window's first sample).
//!
//! Why: the VRAE latent is trained to reconstruct, which rewards encoding the shape every series
//! shares; what tells groups apart is often the level in a part of the window (stride averages,
//! i.e. piecewise aggregate approximation) or how busy the signal is there (mean absolute step).
//! Both stream in O(segments x features) memory with one add per sample, so the device computes
//! them while it runs the encoder and the cluster decision uses them beside the latent.
//!
//! Segment `j` holds steps `j*stride .. (j+1)*stride`; steps at or past `(segments-1)*stride` go
//! to the last segment, so a window longer than the model's never overflows. A segment that saw
//! no sample reads 0.

/// Slots a summary of `segments` x `features` needs (sums, step sums, previous sample).
pub const fn slots(segments: usize, features: usize) -> usize {
    if segments == 0 {
        0
    } else {
        (2 * segments).saturating_mul(features).saturating_add(features)
    }
}

/// Running sums of one window, for up to `S` f32 slots (see [`slots`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Summary<const S: usize> {
    acc: [f32; S],
    steps: u32,
}

impl<const S: usize> Default for Summary<S> {
    fn default() -> Self {
        Summary { acc: [0.0; S], steps: 0 }
    }
}

impl<const S: usize> Summary<S> {
    /// Back to an empty window.
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// Samples added since the last reset.
    pub fn steps(&self) -> u32 {
        self.steps
    }

    /// Adds one sample (`features` values) of a window cut into `segments` segments of
    /// `stride` samples. The caller checked `slots(segments, features) <= S`, `segments >= 1`
    /// and `stride >= 1`.
    pub(crate) fn push(&mut self, sample: &[f32], segments: usize, stride: usize) {
        let f = sample.len();
        let seg = (self.steps as usize / stride).min(segments - 1);
        let (sums, rest) = self.acc.split_at_mut(segments * f);
        let (steps, rest) = rest.split_at_mut(segments * f);
        let prev = &mut rest[..f];
        for (k, &v) in sample.iter().enumerate() {
            sums[seg * f + k] += v;
            if self.steps > 0 {
                steps[seg * f + k] += abs(v - prev[k]);
            }
            prev[k] = v;
        }
        self.steps += 1;
    }

    /// Samples that fell into segment `j` of a window of `n` samples.
    fn count(n: usize, j: usize, segments: usize, stride: usize) -> usize {
        let start = j * stride;
        if n <= start {
            0
        } else if j + 1 == segments {
            n - start
        } else {
            (n - start).min(stride)
        }
    }

    /// Value `i` of the summary (`0 <= i < 2 * segments * features`): first the segment means
    /// (segment-major, then feature), then the mean absolute steps in the same order.
    pub(crate) fn value(&self, i: usize, segments: usize, stride: usize, features: usize) -> f32 {
        let n = self.steps as usize;
        let j = (i % (segments * features)) / features;
        let c = Self::count(n, j, segments, stride);
        if c == 0 {
            return 0.0;
        }
        self.acc[i] / c as f32
    }
}

fn abs(x: f32) -> f32 {
    if x < 0.0 {
        -x
    } else {
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::vec::Vec;

    #[test]
    fn means_and_steps_per_segment() {
        // 7 samples, stride 3, 2 segments: segment 0 = steps 0..3, segment 1 = steps 3..7.
        let x = [1.0f32, 3.0, 2.0, 10.0, 10.0, 12.0, 8.0];
        let mut s = Summary::<16>::default();
        for v in x {
            s.push(&[v], 2, 3);
        }
        let v: Vec<f32> = (0..4).map(|i| s.value(i, 2, 3, 1)).collect();
        assert_eq!(v[0], 2.0);
        assert_eq!(v[1], 10.0);
        // Steps: |3-1| + |2-3| = 3 over 3 samples (the first has no step); |10-2| + 0 + 2 + 4 = 14 over 4.
        assert_eq!(v[2], 1.0);
        assert_eq!(v[3], 3.5);
    }

    #[test]
    fn two_features_and_an_empty_segment() {
        let mut s = Summary::<32>::default();
        for t in 0..2 {
            s.push(&[t as f32, -(t as f32)], 3, 2);
        }
        // Only segment 0 saw samples.
        assert_eq!((s.value(0, 3, 2, 2), s.value(1, 3, 2, 2)), (0.5, -0.5));
        assert_eq!(s.value(2, 3, 2, 2), 0.0);
        assert_eq!((s.value(6, 3, 2, 2), s.value(7, 3, 2, 2)), (0.5, 0.5));
        assert_eq!(slots(3, 2), 14);
    }
}
