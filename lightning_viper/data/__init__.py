"""Video data: shard format, decoding, samples, collate, streams, synthetic data, packing, benchmarks."""
