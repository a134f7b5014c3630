"""The uploads domain (OpenAI's Uploads API): a file sent in parts, then completed into a file."""
