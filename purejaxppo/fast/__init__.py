"""Speed tricks: each a module of its own, each equal to a plain JAX equivalent.

The core modules read as the PPO they implement and call into these where a
plain JAX expression would be slower or slower to compile on some backend.
Every module's docstring names its plain equivalent, the test that checks
the two agree, and the measured gain that earns its place (or, for
`orthogonal_init`, the failure it avoids). A trick that gains under 5% on
every benchmark case goes.

* `shuffle`: per-epoch permutations by a keyed Feistel network, no sort.
* `random_draws`: all of an update's randomness from one random-bits call.
* `straight_threefry`: JAX's threefry as straight-line code (compile time).
* `packed_carry`: a small env carry scanned as one array per dtype.
* `reduced_critic`: the critic pass skips final observations it already has.
* `small_axis`: reductions over a small action axis as elementwise ops.
* `transposed_matmul`: the kernel gradient from an explicit transpose (XLA CPU).
* `im2col`: 3x3 convolutions as one matmul.
* `orthogonal_init`: the orthogonal init from one draw, no LAPACK.
* `lazy_gymnax`: gymnax's plotting imports deferred (start-up time).
* `gru_sequence`: a GRU's backward pass with the weight gradients after the loop.
"""
