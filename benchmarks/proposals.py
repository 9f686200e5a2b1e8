"""Hot-path changes proposed to the library and not adopted yet, written here on top of the *unchanged* library modules
so that the benchmarks can measure them against what the library does today.

Nothing in ``monai_car`` is modified: a proposal uses the public pieces of the library's networks and losses. If the
lead adopts a change, it moves into the library (see BENCHMARKS.md, "Hot-path changes") and leaves this file; the
benchmark then compares the library's own paths.

No proposal is open. Adopted, and so no longer here:

- the stage-2 G update with memory bounded by a chunk of samples and the exact gradient:
  ``RefinementTrainer(sample_chunk_size=...)``, the two passes in ``monai_car.engines.two_pass``; the ``two_pass``
  variants of ``bench_training.py`` run the library's passes outside the trainer
  (``bench_training.two_pass_generator_step``), ``engine_two_pass`` the trainer's own iteration;
- G's noise-free work once per image when sampling in eval mode (``RefinementUNet.forward_multi``, used by
  ``CARNet.sample``);
- the metrics' pair counts over each image's foreground window (``monai_car.metrics``).
"""

from __future__ import annotations

__all__: list[str] = []
