from twisted.application.service import ServiceMaker

feederd = ServiceMaker("nommer feederd", "nommer.feederd.tap", "Runs the nommer job API, autoscaler and notifier.", "feederd")
