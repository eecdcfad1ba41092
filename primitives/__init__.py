"""Female building blocks: loss-curve features, the GP primitive set, fitness, export."""
