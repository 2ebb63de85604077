"""Task aliases: model names whose prompt, decoding and output the gateway owns."""
