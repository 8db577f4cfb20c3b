"""Starting the local stack (Tansu broker, redis-server, vLLM server) and cluster manifests."""
