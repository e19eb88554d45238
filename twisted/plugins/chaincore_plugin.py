from twisted.application.service import ServiceMaker

chaincore = ServiceMaker("ChainCore", "chaincore.service.tap", "A ChainCore full node.", "chaincore")
