"""`appliance bench`: streaming load against OpenAI-compatible servers, ours and llama.cpp's side by side."""
