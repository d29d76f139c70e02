"""The local engine: llama.cpp driven by one worker thread, batching requests into shared decodes.

Only the low-level modules import llama_cpp, each lazily from the modules above them, so importing
the engine does not load the native library: ``runtime`` (the library, its log, its devices),
``llama_params`` (load options as llama.cpp parameters), ``dry_run``, ``grammar`` (JSON schemas as
grammars, through llama-cpp-python's converter), ``sampler`` and ``llama`` (the model and its context).
"""
