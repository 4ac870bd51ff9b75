"""The LangGraph side: the routing state machine (``routing``), its state and reducers
(``state``), and the perception backends as langchain-core tools (``tools``)."""
