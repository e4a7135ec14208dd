# Loads provisioning/Vagrantfile with a recording stand-in for Vagrant's configuration
# object and prints, as JSON, what it would configure: machines, networks, synced
# folders, providers and provisioners. Usage: ruby vagrantfile_probe.rb VAGRANTFILE
require "json"

# Records every setting made on it; `x.y = v` and `x.y(args)` alike.
class Recorder
  attr_reader :calls

  def initialize
    @calls = []
    @children = Hash.new { |h, k| h[k] = Recorder.new }
  end

  def method_missing(name, *args, **kwargs, &block)
    key = name.to_s
    if key.end_with?("=")
      @calls << { "set" => key.chomp("="), "value" => args.first }
      return args.first
    end
    if args.empty? && kwargs.empty? && block.nil?
      return @children[key]
    end
    child = Recorder.new
    block&.call(child)
    @calls << { "call" => key, "args" => args, "kwargs" => kwargs.transform_keys(&:to_s), "block" => child.to_h }
    child
  end

  def respond_to_missing?(*)
    true
  end

  def to_h
    out = { "calls" => @calls.map { |c| c.transform_values { |v| v.is_a?(Recorder) ? v.to_h : v } } }
    @children.each { |k, v| out[k] = v.to_h }
    out
  end
end

module Vagrant
  def self.configure(_version)
    root = Recorder.new
    yield root
    $probe = root
  end
end

load ARGV.fetch(0)
puts JSON.generate($probe.to_h)
