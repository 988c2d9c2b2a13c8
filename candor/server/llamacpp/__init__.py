"""llama-server's utility routes (tokenize, detokenize, apply-template), for editor plugins and tools
written for llama-server."""
