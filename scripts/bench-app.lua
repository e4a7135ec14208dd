-- wrk script for `make bench`: POST /sms/ JSON, rotating over a few messages so a cache
-- sees repeats (as real traffic does) but not one single key.
local messages = {
  "WINNER!! As a valued network customer you have been selected to receive a prize reward! Call 09061701461.",
  "Hey, are we still meeting for lunch tomorrow? Let me know what time works for you.",
  "URGENT! Your mobile number has been awarded a 2000 bonus caller prize. Call 09058095201 now.",
  "Ok lar... Joking wif u oni...",
  "I'll be home late tonight, don't wait up for dinner.",
  "Free entry in 2 a wkly comp to win FA Cup final tkts. Text FA to 87121 to receive entry question",
}
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  i = i + 1
  return wrk.format(nil, "/sms/", nil, '{"sms": "' .. messages[(i % #messages) + 1] .. '"}')
end
