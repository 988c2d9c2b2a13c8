"""llama-server's routes (tokenize, detokenize, apply-template, infill, rerank), for editor plugins and tools
written for llama-server."""
