"""Speed benchmarks (ratios against MONAI, captum and the authors' code measured in the same run) and the round-off
measurement of Signature Activation. They print their tables; ``make benchmarks`` writes them to ``results/``."""
