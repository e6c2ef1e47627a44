"""Local stand-ins for the vendors the worker calls (OpenAI, Deepgram), speaking their wire
protocols on 127.0.0.1, plus the audio harness that plays a caller and listens to the agent."""
